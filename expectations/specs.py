"""The suites, versioned in git: columns each table accepts and the expectations each row meets.

A suite is a tuple of ``ExpectationDef``: a Great Expectations expectation class with its
arguments, plus the gate's bookkeeping (rule name, severity, columns, a plain description).
Expectations over plain columns are evaluated by GX directly. Rules that need order or
context (key uniqueness, ts strictly increasing per series, alignment to the timeframe,
future or unclosed candles, extreme returns, gaps, order-book level checks) and finiteness
(GX's range checks accept +inf) are computed with polars in ``expectations.derive`` into
derived columns, which GX then asserts; the failing rows come back from GX's
``unexpected_index_list``. Values that cannot be parsed into a column's type are found while
coercing the batch (``expectations.coerce``).

Severity:
    critical  the row is quarantined and counts towards failing the batch
    hold      the row is quarantined but does not count (an unclosed candle)
    warning   reported only; the row is merged (extreme returns by default, gaps)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from expectations.policy import GatePolicy

Kind = Literal["str", "float", "ts", "float_list"]
Severity = Literal["critical", "hold", "warning"]

SUITE_VERSION = "3"  # 3: finiteness rules for candle and trade numbers


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: Kind
    required: bool = True


@dataclass(frozen=True)
class ExpectationDef:
    expectation: str  # class name in great_expectations.expectations
    kwargs: dict[str, Any]
    rule: str
    severity: Severity
    columns: tuple[str, ...]
    describe: str

    @property
    def gx_columns(self) -> tuple[str, ...]:
        return tuple(v for k, v in self.kwargs.items() if k in ("column", "column_A", "column_B"))


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[ColumnSpec, ...]
    key: tuple[str, ...]
    series: tuple[str, ...]  # columns identifying one time series (order and gap checks)
    optional_extra: frozenset[str] = field(default_factory=frozenset)  # silently dropped

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    @property
    def finite_columns(self) -> tuple[str, ...]:
        """The scalar float columns: each must be finite. GX's range checks let +inf through
        (inf > 0, and inf >= inf keeps the OHLC pairs consistent), so each gets a derived flag
        column (``finite_flag``)."""
        return tuple(c.name for c in self.columns if c.kind == "float")


BOOKKEEPING = frozenset({"ingested_at"})

CANDLES = TableSpec(
    name="candles",
    columns=(
        ColumnSpec("exchange", "str"),
        ColumnSpec("symbol", "str"),
        ColumnSpec("timeframe", "str"),
        ColumnSpec("ts", "ts"),
        ColumnSpec("open", "float"),
        ColumnSpec("high", "float"),
        ColumnSpec("low", "float"),
        ColumnSpec("close", "float"),
        ColumnSpec("volume", "float"),
    ),
    key=("exchange", "symbol", "timeframe", "ts"),
    series=("exchange", "symbol", "timeframe"),
    optional_extra=BOOKKEEPING,
)

ORDER_BOOK_SNAPSHOTS = TableSpec(
    name="order_book_snapshots",
    columns=(
        ColumnSpec("exchange", "str"),
        ColumnSpec("symbol", "str"),
        ColumnSpec("ts", "ts"),
        ColumnSpec("bid_prices", "float_list"),
        ColumnSpec("bid_sizes", "float_list"),
        ColumnSpec("ask_prices", "float_list"),
        ColumnSpec("ask_sizes", "float_list"),
    ),
    key=("exchange", "symbol", "ts"),
    series=("exchange", "symbol"),
    optional_extra=BOOKKEEPING,
)

TRADES = TableSpec(
    name="trades",
    columns=(
        ColumnSpec("exchange", "str"),
        ColumnSpec("symbol", "str"),
        ColumnSpec("trade_id", "str"),
        ColumnSpec("ts", "ts"),
        ColumnSpec("side", "str", required=False),
        ColumnSpec("price", "float"),
        ColumnSpec("amount", "float"),
        ColumnSpec("cost", "float", required=False),
    ),
    key=("exchange", "symbol", "trade_id"),
    series=("exchange", "symbol"),
    optional_extra=BOOKKEEPING,
)

# Perpetual-futures inputs (issue 15): the contract's mark-price candles, its funding rates
# and its open interest, each in its own table (migrations 0011, 0019).


def _per_period(name: str, *values: ColumnSpec) -> TableSpec:
    """A table of values per (exchange, symbol, timeframe, ts), keyed like candles."""
    return TableSpec(
        name=name,
        columns=(*CANDLES.columns[:4], *values),
        key=CANDLES.key,
        series=CANDLES.series,
        optional_extra=BOOKKEEPING,
    )


MARK_CANDLES = _per_period(
    "mark_candles",
    *CANDLES.columns[4:8],
    ColumnSpec("volume", "float", required=False),  # exchanges publish none
)
# the period is the funding interval (8h); ts as the exchange stamped it (Binance's are a
# few ms past the hour, so not aligned)
FUNDING_RATES = _per_period("funding_rates", ColumnSpec("funding_rate", "float"))
# the period is the statistics period (5m, 1h, ...)
OPEN_INTEREST = _per_period(
    "open_interest",
    ColumnSpec("open_interest", "float"),
    ColumnSpec("open_interest_value", "float", required=False),
)

# A funding rate is a fraction per interval; exchanges clamp it to a few percent (Binance's
# USD-M caps are 0.3 % to 3 %). Beyond this bound a value is a unit or parsing error.
MAX_ABS_FUNDING_RATE = 0.05

SPECS: dict[str, TableSpec] = {
    s.name: s
    for s in (CANDLES, ORDER_BOOK_SNAPSHOTS, TRADES, MARK_CANDLES, FUNDING_RATES, OPEN_INTEREST)
}
FUTURES_TABLES = ("mark_candles", "funding_rates", "open_interest")


def finite_flag(column: str) -> str:
    """The derived column (``expectations.derive``) that is False where ``column`` is ±inf."""
    return f"{column}_finite"


def not_null(
    columns: Iterable[str], what: str = "is missing (null or NaN)"
) -> list[ExpectationDef]:
    """One critical not-null expectation per column, described as ``"<column> <what>"``."""
    return [
        ExpectationDef(
            "ExpectColumnValuesToNotBeNull",
            {"column": c},
            "not_null",
            "critical",
            (c,),
            f"{c} {what}",
        )
        for c in columns
    ]


def flag(
    column: str,
    rule: str,
    describe: str,
    severity: Severity = "critical",
    columns: tuple[str, ...] = ("ts",),
) -> ExpectationDef:
    """A derived boolean column that must be True on every row."""
    return ExpectationDef(
        "ExpectColumnValuesToBeInSet",
        {"column": column, "value_set": [True]},
        rule,
        severity,
        columns,
        describe,
    )


def _pair(a: str, b: str, rule: str, describe: str) -> ExpectationDef:
    return ExpectationDef(
        "ExpectColumnPairValuesAToBeGreaterThanB",
        {
            "column_A": a,
            "column_B": b,
            "or_equal": True,
            "ignore_row_if": "either_value_is_missing",
        },
        rule,
        "critical",
        (a, b),
        describe,
    )


def _positive(column: str, strict: bool = True) -> ExpectationDef:
    return ExpectationDef(
        "ExpectColumnValuesToBeBetween",
        {"column": column, "min_value": 0, "strict_min": strict},
        "price_positive" if strict else "non_negative",
        "critical",
        (column,),
        f"{column} must be {'>' if strict else '>='} 0",
    )


def _finite(columns: Iterable[str]) -> list[ExpectationDef]:
    """One critical rule per column; it names the column, so quarantine.column_name does too."""
    return [
        flag(finite_flag(c), "finite", f"{c} must be finite (not +/-inf)", columns=(c,))
        for c in columns
    ]


def _common_time_rules(increasing_within: str | None) -> list[ExpectationDef]:
    """Key unique and ts not in the future; with ``increasing_within`` (the series columns,
    as text) also ts strictly increasing per series."""
    rules = [
        flag(
            "key_unique",
            "key_unique",
            "the key appears more than once in the batch "
            "(identical copies: all but the first; conflicting copies: all)",
        ),
        flag("ts_not_future", "ts_not_future", "ts is in the future"),
    ]
    if increasing_within is not None:
        rules.append(
            flag(
                "ts_increasing",
                "ts_increasing",
                f"ts is not strictly increasing within ({increasing_within})",
            )
        )
    return rules


def candle_suite(policy: GatePolicy) -> tuple[ExpectationDef, ...]:
    prices = ["open", "high", "low", "close"]
    return (
        *not_null(["exchange", "symbol", "timeframe", "ts", *prices, "volume"]),
        *[_positive(c) for c in prices],
        _positive("volume", strict=False),
        *_finite(CANDLES.finite_columns),
        _pair("high", "low", "ohlc_consistent", "high must be >= low"),
        _pair("high", "open", "ohlc_consistent", "high must be >= open"),
        _pair("high", "close", "ohlc_consistent", "high must be >= close"),
        _pair("open", "low", "ohlc_consistent", "low must be <= open"),
        _pair("close", "low", "ohlc_consistent", "low must be <= close"),
        flag(
            "timeframe_known",
            "timeframe_known",
            "timeframe is not a known duration like 1m, 5m, 15m, 1h, 1d",
            columns=("timeframe",),
        ),
        *_common_time_rules(increasing_within="exchange, symbol, timeframe"),
        flag("ts_aligned", "ts_aligned", "ts is not aligned to the timeframe"),
        flag(
            "candle_closed",
            "candle_closed",
            "the candle is not closed yet (close time after now)",
            severity="hold" if policy.reject_unclosed_candles else "warning",
        ),
        flag(
            "return_within_sigma",
            "extreme_return",
            f"|log return| above {policy.extreme_return_sigmas:g} rolling sigmas "
            f"({policy.extreme_return_window} previous bars)",
            severity="critical" if policy.extreme_return_action == "quarantine" else "warning",
            columns=("close",),
        ),
        ExpectationDef(
            "ExpectColumnValuesToBeBetween",
            {
                "column": "missing_bars_before",
                "min_value": 0,
                "max_value": 0,
                "mostly": max(0.0, 1.0 - policy.max_gap_fraction),
            },
            "gaps",
            "warning",
            ("ts",),
            "bars missing before this candle (a gap)",
        ),
    )


def order_book_suite(policy: GatePolicy) -> tuple[ExpectationDef, ...]:
    return (
        *not_null(["exchange", "symbol", "ts"]),
        flag(
            "levels_parse",
            "levels_present",
            "price and size lists missing, of different lengths, or empty",
            columns=("bid_prices", "bid_sizes", "ask_prices", "ask_sizes"),
        ),
        flag(
            "prices_positive",
            "price_positive",
            "a level price is not > 0 (or not finite)",
            columns=("bid_prices", "ask_prices"),
        ),
        flag(
            "sizes_positive",
            "size_positive",
            "a level size is not > 0 (or not finite)",
            columns=("bid_sizes", "ask_sizes"),
        ),
        flag(
            "levels_sorted",
            "levels_sorted",
            "bids must be strictly descending and asks strictly ascending",
            columns=("bid_prices", "ask_prices"),
        ),
        ExpectationDef(
            "ExpectColumnPairValuesAToBeGreaterThanB",
            {
                "column_A": "best_ask",
                "column_B": "best_bid",
                "or_equal": False,
                "ignore_row_if": "either_value_is_missing",
            },
            "book_not_crossed",
            "critical",
            ("bid_prices", "ask_prices"),
            "best bid must be < best ask",
        ),
        *_common_time_rules(increasing_within="exchange, symbol"),
    )


def trade_suite(policy: GatePolicy) -> tuple[ExpectationDef, ...]:
    return (
        *not_null(["exchange", "symbol", "trade_id", "ts", "price", "amount"]),
        _positive("price"),
        ExpectationDef(
            "ExpectColumnValuesToBeBetween",
            {"column": "amount", "min_value": 0, "strict_min": True},
            "amount_positive",
            "critical",
            ("amount",),
            "amount must be > 0",
        ),
        *_finite(TRADES.finite_columns),
        ExpectationDef(
            "ExpectColumnValuesToBeInSet",
            {"column": "side", "value_set": ["buy", "sell"]},
            "side_known",
            "critical",
            ("side",),
            "side must be buy or sell (or null)",
        ),
        *_common_time_rules(increasing_within=None),
        flag(
            "cost_consistent",
            "cost_consistent",
            "cost differs from price * amount by more than 0.1%",
            severity="warning",
            columns=("cost",),
        ),
    )


def mark_candle_suite(policy: GatePolicy) -> tuple[ExpectationDef, ...]:
    """The candle suite without the volume requirement (mark prices have no volume)."""
    return tuple(
        d for d in candle_suite(policy) if not (d.rule == "not_null" and d.columns == ("volume",))
    )


def _timeframe_known() -> ExpectationDef:
    return flag(
        "timeframe_known",
        "timeframe_known",
        "timeframe is not a known duration like 5m, 1h, 8h, 1d",
        columns=("timeframe",),
    )


def funding_rate_suite(policy: GatePolicy) -> tuple[ExpectationDef, ...]:
    return (
        *not_null(["exchange", "symbol", "timeframe", "ts", "funding_rate"]),
        *_finite(FUNDING_RATES.finite_columns),
        ExpectationDef(
            "ExpectColumnValuesToBeBetween",
            {
                "column": "funding_rate",
                "min_value": -MAX_ABS_FUNDING_RATE,
                "max_value": MAX_ABS_FUNDING_RATE,
            },
            "funding_rate_bounded",
            "critical",
            ("funding_rate",),
            f"|funding_rate| above {MAX_ABS_FUNDING_RATE:g} per interval (a unit error?)",
        ),
        _timeframe_known(),
        *_common_time_rules(increasing_within="exchange, symbol, timeframe"),
    )


def open_interest_suite(policy: GatePolicy) -> tuple[ExpectationDef, ...]:
    return (
        *not_null(["exchange", "symbol", "timeframe", "ts", "open_interest"]),
        _positive("open_interest", strict=False),
        _positive("open_interest_value", strict=False),
        *_finite(OPEN_INTEREST.finite_columns),
        _timeframe_known(),
        *_common_time_rules(increasing_within="exchange, symbol, timeframe"),
        flag("ts_aligned", "ts_aligned", "ts is not aligned to the timeframe"),
    )


SUITES = {
    "candles": candle_suite,
    "order_book_snapshots": order_book_suite,
    "trades": trade_suite,
    "mark_candles": mark_candle_suite,
    "funding_rates": funding_rate_suite,
    "open_interest": open_interest_suite,
}


def suite_for(table: str, policy: GatePolicy) -> tuple[ExpectationDef, ...]:
    try:
        return SUITES[table](policy)
    except KeyError:
        raise ValueError(f"no quality suite for table {table!r}; known: {sorted(SUITES)}") from None


def spec_for(table: str) -> TableSpec:
    try:
        return SPECS[table]
    except KeyError:
        raise ValueError(
            f"the quality gate has no spec for table {table!r}; known: {sorted(SPECS)}"
        ) from None
