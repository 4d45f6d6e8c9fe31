"""Suites for derived data: features and predictions (checked before they are written).

``check_frame`` validates a polars frame with Great Expectations and returns the failing
rows; it writes nothing to the warehouse (the caller decides what to do), but the GX result
is stored and appears in the Data Docs.

Feature ranges (documented here, by column name; ``<tf>`` suffixes such as ``_1h`` allowed):

| columns | rule |
| --- | --- |
| every feature column | finite or null (null only while a window warms up) |
| ``rsi_N`` | 0 ≤ x ≤ 100 |
| ``hoursin``, ``hourcos``, ``dowsin``, ``dowcos``, ``obimb_*``, ``tfimb_*`` | -1 ≤ x ≤ 1 |
| ``er_N`` (efficiency ratio), ``weekend``, ``tfbuy_*`` | 0 ≤ x ≤ 1 |
| ``hour`` | 0 ≤ x < 24; ``dow`` 0 ≤ x ≤ 6 |
| ``rvol_*``, ``bbwidth_*``, ``spreadbps``, ``volratio_*`` | ≥ 0 |
| ``gap_bars`` | ≥ 0 |

Predictions: p_buy, p_hold, p_sell and confidence in [0, 1]; the three probabilities sum
to 1 (±1e-4); predicted_class and outcome_class in {buy, hold, sell}; horizon_bars ≥ 1;
keys present and unique.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import polars as pl

from expectations.specs import ExpectationDef, flag, not_null
from warehouse.settings import Settings

FEATURE_KEYS = ("exchange", "symbol", "timeframe", "ts")
PREDICTION_KEYS = ("exchange", "symbol", "timeframe", "ts", "model_id")
CLASSES = ["buy", "hold", "sell"]

# (name pattern, min, max); a column takes the first pattern that matches
FEATURE_RANGES: tuple[tuple[str, float | None, float | None], ...] = (
    (r"rsi_\d+(_\d+[mhd])?", 0.0, 100.0),
    (r"(hoursin|hourcos|dowsin|dowcos)(_\d+[mhd])?", -1.0, 1.0),
    (r"(obimb|tfimb)(_lag\d+)?(_\d+)?(_\d+[mhd])?", -1.0, 1.0),
    (r"(er_\d+|weekend|tfbuy(_\d+)?)(_\d+[mhd])?", 0.0, 1.0),
    (r"hour(_\d+[mhd])?", 0.0, 23.999),
    (r"dow(_\d+[mhd])?", 0.0, 6.0),
    (r"(rvol|bbwidth|volratio)_\d+(_\d+[mhd])?|spreadbps(_\d+)?", 0.0, None),
    (r"gap_bars", 0.0, None),
)


@dataclass(frozen=True)
class FrameCheck:
    table: str
    rows: int
    success: bool
    bad_rows: tuple[int, ...]  # row positions in the frame checked
    failures: tuple[str, ...]  # one line per failed expectation: rule, column, count
    validation_id: str


def feature_range(column: str) -> tuple[float | None, float | None] | None:
    for pattern, lo, hi in FEATURE_RANGES:
        if re.fullmatch(pattern, column):
            return lo, hi
    return None


def _between(column: str, lo: float | None, hi: float | None, rule: str) -> ExpectationDef:
    kwargs: dict[str, object] = {"column": column}
    if lo is not None:
        kwargs["min_value"] = lo
    if hi is not None:
        kwargs["max_value"] = hi
    return ExpectationDef(
        "ExpectColumnValuesToBeBetween",
        kwargs,
        rule,
        "critical",
        (column,),
        f"{column} must be within [{lo}, {hi}]",
    )


def _flag(column: str, rule: str, describe: str) -> ExpectationDef:
    return flag(column, rule, describe, columns=(column,))


def _key_unique(keys: tuple[str, ...]) -> pl.Expr:
    return (pl.len().over(list(keys)) == 1).alias("key_unique")


def features_suite(frame: pl.DataFrame) -> tuple[pl.DataFrame, tuple[ExpectationDef, ...]]:
    numeric = [c for c, t in frame.schema.items() if c not in FEATURE_KEYS and t.is_numeric()]
    floats = [c for c in numeric if frame.schema[c].is_float()]
    derived = frame.with_columns(
        pl.all_horizontal(
            [pl.col(c).is_null() | pl.col(c).is_finite() for c in floats] or [pl.lit(True)]
        )
        .fill_null(True)
        .alias("all_finite"),
        _key_unique(FEATURE_KEYS),
    )
    definitions: list[ExpectationDef] = [
        *not_null((*FEATURE_KEYS, "feature_set_version"), what="is missing"),
        _flag(
            "all_finite",
            "finite",
            "a feature is NaN or infinite (null is allowed while warming up)",
        ),
        _flag("key_unique", "key_unique", "the key appears more than once"),
    ]
    for column in numeric:
        bounds = feature_range(column)
        if bounds is not None:
            definitions.append(_between(column, bounds[0], bounds[1], "feature_range"))
    return derived, tuple(definitions)


def predictions_suite(frame: pl.DataFrame) -> tuple[pl.DataFrame, tuple[ExpectationDef, ...]]:
    probs = pl.col("p_buy") + pl.col("p_hold") + pl.col("p_sell")
    derived = frame.with_columns(
        ((probs - 1.0).abs() <= 1e-4).fill_null(True).alias("probabilities_sum_to_one"),
        _key_unique(PREDICTION_KEYS),
    )
    definitions = (
        *not_null((*PREDICTION_KEYS, "horizon_bars", "predicted_class"), what="is missing"),
        *[
            _between(c, 0.0, 1.0, "probability_range")
            for c in ("p_buy", "p_hold", "p_sell", "confidence")
        ],
        _flag("probabilities_sum_to_one", "probabilities_sum", "p_buy + p_hold + p_sell must be 1"),
        _flag("key_unique", "key_unique", "the key appears more than once"),
        *[
            ExpectationDef(
                "ExpectColumnValuesToBeInSet",
                {"column": c, "value_set": CLASSES},
                "class_known",
                "critical",
                (c,),
                f"{c} is not buy/hold/sell",
            )
            for c in ("predicted_class", "outcome_class")
        ],
        ExpectationDef(
            "ExpectColumnValuesToBeBetween",
            {"column": "horizon_bars", "min_value": 1},
            "horizon_positive",
            "critical",
            ("horizon_bars",),
            "horizon_bars must be >= 1",
        ),
    )
    return derived, definitions


SUITES = {"features": features_suite, "predictions": predictions_suite}


def check_frame(
    table: str, frame: pl.DataFrame, *, settings: Settings, run_id: str | None = None
) -> FrameCheck:
    """Validate a features or predictions frame; returns the failing rows and rules."""
    from expectations import engine

    if table not in SUITES:
        raise ValueError(f"no frame suite for {table!r}; known: {sorted(SUITES)}")
    needed = PREDICTION_KEYS if table == "predictions" else FEATURE_KEYS
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"{table} frame is missing column(s) {missing}")
    if table == "predictions":
        for column in ("p_buy", "p_hold", "p_sell", "confidence", "outcome_class"):
            if column not in frame.columns:
                frame = frame.with_columns(pl.lit(None).alias(column))
    derived, definitions = SUITES[table](frame)
    validation_id = run_id or uuid.uuid4().hex
    if frame.height == 0:
        return FrameCheck(table, 0, True, (), (), validation_id)
    columns = sorted({c for d in definitions for c in d.gx_columns})
    run = engine.validate(
        settings,
        f"{table}@frames",
        definitions,
        derived.select(columns).to_pandas(),
        run_name=validation_id,
    )
    bad: set[int] = set()
    failures = []
    for outcome in run.outcomes:
        if outcome.unexpected_count:
            d = outcome.definition
            bad.update(outcome.unexpected_rows)
            failures.append(
                f"{d.rule} on {','.join(d.columns)}: "
                f"{outcome.unexpected_count} row(s); {d.describe}"
            )
    return FrameCheck(
        table, frame.height, not bad, tuple(sorted(bad)), tuple(failures), validation_id
    )
