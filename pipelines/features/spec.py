"""The one feature specification: every feature is a row of data here.

A feature is a :class:`Node` — ``(name, op, inputs, window, param)`` — in a small graph per
timeframe. The polars batch pipeline (:mod:`pipelines.features.batch`) and the O(1) online
engine (:mod:`pipelines.features.online`) both *interpret* this graph; operators are
implemented once per engine in :mod:`pipelines.features.ops`, no feature is written by hand
in either engine. ``FEATURE_SET_VERSION`` is a hash of this specification.

Names follow ``<indicator>_<window>[_<timeframe>]`` (``rsi_14``, ``ema_12``,
``rsi_14_1h``); features without a window (time of day, order-book imbalance) have no window
part, lags add ``_lag<k>``. Intermediate nodes start with ``_`` and are not output.

Gap policy (``gap_bars`` = bars missing between a candle and the previous one): gaps of at
most ``MAX_CARRIED_GAP_BARS`` missing bars are carried — windows count candles, the missing
bars are not invented, and ``gap_bars`` tells the model; a longer gap restarts every window
(all rolling and recursive state is reset, features are null again until warmed up).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from pipelines.resample import TIMEFRAMES_MS

# Gaps of up to this many missing bars are carried; longer gaps restart every window.
MAX_CARRIED_GAP_BARS = 5
# Higher timeframes joined as-of (only closed candles) onto the base timeframe.
HIGHER_TIMEFRAMES: tuple[str, ...] = ("5m", "15m", "1h")
TIMEFRAME_MS = TIMEFRAMES_MS
# Inputs every timeframe graph gets from its candles.
CANDLE_INPUTS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
# Inputs only the base timeframe gets (null when there is no order book / no trades).
#   ob_imbalance: (bid size - ask size) / (bid size + ask size) over the top levels of the last
#     order-book snapshot taken before the candle closed; ob_spread_bps: (ask - bid) / mid in bps.
#   trade_buy / trade_sell: base volume of buyer- / seller-initiated trades in the candle.
BASE_ONLY_INPUTS: tuple[str, ...] = ("ob_imbalance", "ob_spread_bps", "trade_buy", "trade_sell")
ORDER_BOOK_LEVELS = 5
LAGS: tuple[int, ...] = (1, 2, 3, 5, 10)

# Side groups: features of other tables joined as of the bar's close (no look-ahead), computed
# by their own modules and fed to the graph as inputs (``side_<name>``), copied to the column
# ``<name>`` here. Model inputs when the warehouse has the data, null (so left out of a
# model's inputs by ``models.data.assemble_samples``) when it has none. The batch and online
# values come from ``pipelines.features.side`` (tests hold the names equal to the modules').
#   funding: pipelines.futures_features (funding_rates, mark_candles, open_interest);
#   sentiment: pipelines.news.features (news and news_scores, VADER by default).
FUNDING_FEATURES: tuple[str, ...] = (
    "funding_rate_last",
    "funding_rate_mean_3",
    "basis",
    "oi_change",
)
_NEWS_WINDOWS = ("1h", "24h")
SENTIMENT_FEATURES: tuple[str, ...] = tuple(
    f"{prefix}{name}"
    for prefix in ("news_", "market_news_")
    for name in (*[f"{k}_{w}" for w in _NEWS_WINDOWS for k in ("mean", "count")], "decayed")
)
SIDE_GROUPS: dict[str, tuple[str, ...]] = {
    "funding": FUNDING_FEATURES,
    "sentiment": SENTIMENT_FEATURES,
}
SIDE_FEATURES: tuple[str, ...] = FUNDING_FEATURES + SENTIMENT_FEATURES
SIDE_INPUTS: tuple[str, ...] = tuple(f"side_{name}" for name in SIDE_FEATURES)
_SIDE_DOCS: dict[str, str] = {
    "funding_rate_last": "the last funding rate of the perpetual stamped before the candle "
    "closed (null without funding rates)",
    "funding_rate_mean_3": "the mean of the last three such funding rates",
    "basis": "close / close of the mark-price candle of the same bar - 1 (null without it)",
    "oi_change": "the last open interest stamped before the close / the one before it - 1",
}
for _p, _who in (("news_", "headlines tagged with the pair's base asset"), ("market_news_",
    "every scored headline")):  # fmt: skip
    for _w in _NEWS_WINDOWS:
        _SIDE_DOCS[f"{_p}mean_{_w}"] = (
            f"mean sentiment score (VADER compound, -1..1) of the {_who} published in the "
            f"{_w} before the close (0 with none; the whole group is null before the first "
            "headline)"
        )
        _SIDE_DOCS[f"{_p}count_{_w}"] = f"how many {_who} were published in that {_w}"
    _SIDE_DOCS[f"{_p}decayed"] = (
        f"sum of the scores of the {_who} before the close, each weighted 0.5 ** (age / 6 h)"
    )


@dataclass(frozen=True)
class Node:
    """One node of the feature graph. ``inputs`` name earlier nodes or graph inputs."""

    name: str
    op: str
    inputs: tuple[str, ...] = ()
    window: int | None = None
    param: float | None = None
    group: str = ""
    doc: str = ""

    @property
    def output(self) -> bool:
        return not self.name.startswith("_")


@dataclass(frozen=True)
class Graph:
    """The nodes computed on one timeframe's candles, in evaluation order."""

    inputs: tuple[str, ...]
    nodes: tuple[Node, ...]

    def outputs(self) -> list[str]:
        return [n.name for n in self.nodes if n.output]


def _n(
    name: str,
    op: str,
    *inputs: str,
    window: int | None = None,
    param: float | None = None,
    group: str = "",
    doc: str = "",
) -> Node:
    return Node(name, op, tuple(inputs), window, param, group, doc)


# The regime labels (docs/regimes.md): stored in the features table beside the features and
# computed by the same graph in both engines, but NOT model inputs (``feature_columns()``
# leaves them out): reports break results down by them.
REGIME_TREND_BARS = 60  # trend: the 60-bar log return ...
# ... against +-0.5 sigma of a 60-bar random walk of the bars' 1-bar volatility. Half a sigma:
# 1-bar returns mean-revert (bid-ask bounce), so on the real 5m/1m files a 60-bar move's spread
# is 0.47-0.83 of that sigma, and +-1 sigma left 82-96 % of bars "sideways" (docs/regimes.md).
REGIME_TREND_BAND_SIGMAS = 0.5
REGIME_VOL_BASELINE_BARS = 720  # volatility: rvol_60 against its mean over 720 bars
REGIME_COLUMNS: tuple[str, ...] = ("regime_trend", "regime_vol")


def _regime_label_nodes() -> list[Node]:
    g = "regime label"
    w, base = REGIME_TREND_BARS, REGIME_VOL_BASELINE_BARS
    return [
        _n(
            "regime_trend",
            "trend",
            f"logret_{w}",
            f"rvol_{w}",
            param=REGIME_TREND_BAND_SIGMAS * math.sqrt(w),
            group=g,
            doc=f"1 bull once logret_{w} rises above {REGIME_TREND_BAND_SIGMAS:g} x rvol_{w} x "
            f"sqrt({w}) (that many standard deviations of a {w}-bar random walk), -1 bear once "
            "it falls below minus that, 0 sideways once it is back within half of it (kept in "
            "between); not a model input",
        ),
        _n(f"_rvolbase{base}", "sma", f"rvol_{w}", window=base),
        _n(f"_rvolrel{base}", "div", f"rvol_{w}", f"_rvolbase{base}", param=1e-12),
        _n(
            "regime_vol",
            "gt",
            f"_rvolrel{base}",
            param=1.0,
            group=g,
            doc=f"1 high volatility (rvol_{w} above its mean over the last {base} bars), 0 low; "
            "not a model input",
        ),
    ]


def _price_nodes() -> list[Node]:
    """Nodes that need only candles: computed on the base timeframe and on higher ones."""
    g = "price"
    nodes = [
        _n("_lc", "log", "close"),
        _n("_ret1", "diff", "_lc", window=1),
    ]
    for h in (1, 5, 10, 15, 60):
        nodes.append(
            _n(
                f"logret_{h}",
                "diff",
                "_lc",
                window=h,
                group=g,
                doc=f"ln(close / close {h} bars ago)",
            )
        )
    for h in (10, 30):
        nodes.append(_n(f"_c{h}", "shift", "close", window=h))
        nodes.append(
            _n(
                f"mom_{h}",
                "ratio_m1",
                "close",
                f"_c{h}",
                window=h,
                group=g,
                doc=f"close / close {h} bars ago - 1",
            )
        )
    for h in (5, 10):
        nodes.append(
            _n(
                f"accel_{h}",
                "diff",
                f"logret_{h}",
                window=h,
                group=g,
                doc=f"logret_{h} - logret_{h} {h} bars ago",
            )
        )
    for w in (10, 30, 60):
        nodes.append(
            _n(
                f"rvol_{w}",
                "std",
                "_ret1",
                window=w,
                group=g,
                doc=f"std of 1-bar log returns over {w} bars",
            )
        )
    nodes.append(
        _n(
            "rvolratio_10_60",
            "div",
            "rvol_10",
            "rvol_60",
            param=1e-12,
            group="volatility",
            doc="rvol_10 / rvol_60",
        )
    )
    g = "moving averages"
    for w in (10, 20, 50):
        nodes.append(
            _n(
                f"sma_{w}",
                "sma",
                "close",
                window=w,
                group=g,
                doc=f"simple mean of close over {w} bars",
            )
        )
    for w in (12, 26, 50):
        nodes.append(
            _n(
                f"ema_{w}",
                "ema",
                "close",
                window=w,
                group=g,
                doc=f"EMA of close, alpha 2/({w}+1), seeded with sma_{w}",
            )
        )
    for ma in ("sma_20", "sma_50", "ema_12", "ema_26"):
        ind, win = ma.split("_")
        nodes.append(
            _n(
                f"close{ind}_{win}",
                "ratio_m1",
                "close",
                ma,
                group=g,
                doc=f"close / {ma} - 1 (position vs the average)",
            )
        )
    nodes += [
        _n("smacross_10_50", "ratio_m1", "sma_10", "sma_50", group=g, doc="sma_10 / sma_50 - 1"),
        _n(
            "emacross_12_26",
            "ratio_m1",
            "ema_12",
            "ema_26",
            group=g,
            doc="ema_12 / ema_26 - 1 (normalised MACD line)",
        ),
        _n("macdsig_9", "ema", "emacross_12_26", window=9, group=g, doc="EMA(9) of emacross_12_26"),
        _n(
            "macdhist_9",
            "sub",
            "emacross_12_26",
            "macdsig_9",
            group=g,
            doc="emacross_12_26 - macdsig_9",
        ),
        _n("_std20", "std", "close", window=20),
        _n(
            "bbpos_20",
            "zscore",
            "close",
            "sma_20",
            "_std20",
            param=2.0,
            group=g,
            doc="(close - sma_20) / (2 std_20): Bollinger position, ±1 at the bands",
        ),
        _n(
            "bbwidth_20",
            "div",
            "_std20",
            "sma_20",
            param=0.25e-12,
            group=g,
            doc="std_20 / sma_20 (band width / 4)",
        ),
    ]
    g = "rsi"
    nodes += [
        _n("_chg", "diff", "close", window=1),
        _n("_gain", "pos", "_chg"),
        _n("_loss", "negpart", "_chg"),
    ]
    for w in (7, 14):
        nodes += [
            _n(f"_ag{w}", "wilder", "_gain", window=w),
            _n(f"_al{w}", "wilder", "_loss", window=w),
            _n(
                f"rsi_{w}",
                "rsi",
                f"_ag{w}",
                f"_al{w}",
                window=w,
                group=g,
                doc=f"Wilder RSI({w}), 0-100; average gain/loss seeded with their simple mean of "
                f"the first {w} changes",
            ),
        ]
    nodes += [
        _n("rsimom_14", "diff", "rsi_14", window=1, group=g, doc="rsi_14 - rsi_14 one bar ago"),
        _n(
            "rsiacc_14",
            "diff",
            "rsimom_14",
            window=1,
            group=g,
            doc="rsimom_14 - rsimom_14 one bar ago",
        ),
        _n(
            "rsios_14",
            "lt",
            "rsi_14",
            param=30.0,
            group=g,
            doc="1 when rsi_14 < 30 (oversold) else 0",
        ),
        _n(
            "rsiob_14",
            "gt",
            "rsi_14",
            param=70.0,
            group=g,
            doc="1 when rsi_14 > 70 (overbought) else 0",
        ),
    ]
    g = "regime"
    nodes.append(_n("_absret", "abs", "_ret1"))
    for w in (10, 30):
        nodes += [
            _n(f"_lr{w}", "diff", "_lc", window=w),
            _n(f"_netabs{w}", "abs", f"_lr{w}"),
            _n(f"_path{w}", "sum", "_absret", window=w),
            _n(
                f"er_{w}",
                "div",
                f"_netabs{w}",
                f"_path{w}",
                param=1e-12,
                group=g,
                doc=f"Kaufman efficiency ratio over {w} bars: |net log move| / sum of |1-bar log "
                f"moves| (1 trend, 0 range)",
            ),
        ]
    nodes.append(
        _n(
            "regime_30",
            "regime",
            "er_30",
            "_lr30",
            param=0.3,
            group=g,
            doc="1 bull (er_30 > 0.3 and up over 30 bars), -1 bear (er_30 > 0.3 and down), 0 "
            "sideways",
        )
    )
    nodes += _regime_label_nodes()
    g = "volume"
    for w in (5, 20, 60):
        nodes.append(_n(f"_vsma{w}", "sma", "volume", window=w))
    nodes += [
        _n(
            "volratio_20",
            "div",
            "volume",
            "_vsma20",
            param=1e-12,
            group=g,
            doc="volume / mean volume over 20 bars",
        ),
        _n(
            "volratio_60",
            "div",
            "volume",
            "_vsma60",
            param=1e-12,
            group=g,
            doc="volume / mean volume over 60 bars",
        ),
        _n("_vr520", "div", "_vsma5", "_vsma20", param=1e-12),
        _n(
            "volmom_5",
            "add",
            "_vr520",
            param=-1.0,
            group=g,
            doc="mean volume 5 bars / mean volume 20 bars - 1",
        ),
        _n("_vstd60", "std", "volume", window=60),
        _n(
            "volz_60",
            "zscore",
            "volume",
            "_vsma60",
            "_vstd60",
            param=1.0,
            group=g,
            doc="(volume - mean_60) / std_60: activity z-score",
        ),
    ]
    return nodes


# Features of the higher timeframes joined onto the base one (name + "_" + timeframe).
HIGHER_TIMEFRAME_FEATURES: tuple[str, ...] = (
    "logret_1",
    "rvol_10",
    "rsi_14",
    "closesma_20",
    "emacross_12_26",
    "bbpos_20",
    "er_10",
    "volratio_20",
)


def _base_only_nodes() -> list[Node]:
    nodes: list[Node] = []
    g = "time"
    for name, doc in (
        ("hour", "hour of the candle open (UTC), 0-23"),
        ("dow", "day of week of the candle open (UTC), 0 = Monday"),
        ("weekend", "1 on Saturday and Sunday (UTC)"),
        ("hoursin", "sin(2 pi (hour + minute/60) / 24)"),
        ("hourcos", "cos(2 pi (hour + minute/60) / 24)"),
        ("dowsin", "sin(2 pi dow / 7)"),
        ("dowcos", "cos(2 pi dow / 7)"),
    ):
        nodes.append(_n(name, name, "ts", group=g, doc=doc))
    g = "order book"
    nodes += [
        _n(
            "obimb",
            "copy",
            "ob_imbalance",
            group=g,
            doc=f"order-book imbalance over the top {ORDER_BOOK_LEVELS} levels of the last "
            f"snapshot before the candle closed, -1..1 (null without an order book)",
        ),
        _n(
            "spreadbps",
            "copy",
            "ob_spread_bps",
            group=g,
            doc="bid-ask spread of that snapshot in bps of the mid price",
        ),
        _n("obimbmom_5", "diff", "ob_imbalance", window=5, group=g, doc="obimb - obimb 5 bars ago"),
        _n("_obsma20", "sma", "ob_imbalance", window=20),
        _n(
            "obimbdev_20", "sub", "ob_imbalance", "_obsma20", group=g, doc="obimb - its 20-bar mean"
        ),
    ]
    g = "trade flow"
    nodes += [
        _n("_tvol", "add", "trade_buy", "trade_sell"),
        _n("_tnet", "sub", "trade_buy", "trade_sell"),
        _n(
            "tfbuy_1",
            "div",
            "trade_buy",
            "_tvol",
            param=1e-12,
            group=g,
            doc="buy volume / traded volume in the candle (buy pressure; null without trades)",
        ),
        _n(
            "tfimb_1",
            "div",
            "_tnet",
            "_tvol",
            param=1e-12,
            group=g,
            doc="(buy - sell) / (buy + sell) volume in the candle",
        ),
        _n("_tbuy10", "sum", "trade_buy", window=10),
        _n("_tvol10", "sum", "_tvol", window=10),
        _n("_tnet10", "sum", "_tnet", window=10),
        _n(
            "tfbuy_10",
            "div",
            "_tbuy10",
            "_tvol10",
            param=1e-12,
            group=g,
            doc="buy pressure over 10 bars",
        ),
        _n(
            "tfimb_10",
            "div",
            "_tnet10",
            "_tvol10",
            param=1e-12,
            group=g,
            doc="trade imbalance over 10 bars",
        ),
    ]
    for group, names in SIDE_GROUPS.items():
        nodes += [
            _n(name, "copy", f"side_{name}", group=group, doc=_SIDE_DOCS[name]) for name in names
        ]
    nodes.append(
        _n(
            "rsixobimb_14",
            "rsi_x",
            "rsi_14",
            "ob_imbalance",
            group="interaction",
            doc="(rsi_14 - 50) / 50 * obimb",
        )
    )
    for core in ("logret_1", "rsi_14", "rvol_10", "volratio_20", "obimb"):
        for k in LAGS:
            nodes.append(
                _n(
                    f"{core}_lag{k}",
                    "shift",
                    core,
                    window=k,
                    group="lags",
                    doc=f"{core} {k} bars ago",
                )
            )
    return nodes


def dependencies(nodes: Iterable[Node], outputs: Iterable[str]) -> set[str]:
    """The names of the nodes ``outputs`` depend on, themselves included (inputs left out)."""
    by_name = {n.name: n for n in nodes}
    needed: set[str] = set()
    stack = list(outputs)
    while stack:
        name = stack.pop()
        if name in needed or name not in by_name:
            continue
        needed.add(name)
        stack.extend(by_name[name].inputs)
    return needed


def higher_graph() -> Graph:
    """The graph computed on a higher timeframe's candles (its outputs are then suffixed).

    Only the nodes that ``HIGHER_TIMEFRAME_FEATURES`` need are kept; base outputs that are
    only intermediate here are renamed with a leading ``_``.
    """
    nodes = _price_nodes()
    needed = dependencies(nodes, HIGHER_TIMEFRAME_FEATURES)
    rename = {
        n.name: "_" + n.name
        for n in nodes
        if n.name in needed and n.output and n.name not in HIGHER_TIMEFRAME_FEATURES
    }
    kept = tuple(
        Node(
            rename.get(n.name, n.name),
            n.op,
            tuple(rename.get(i, i) for i in n.inputs),
            n.window,
            n.param,
            n.group,
            n.doc,
        )
        for n in nodes
        if n.name in needed
    )
    return Graph(CANDLE_INPUTS, kept)


def base_graph() -> Graph:
    return Graph(
        CANDLE_INPUTS + BASE_ONLY_INPUTS + ("ts",) + SIDE_INPUTS,
        tuple(_price_nodes() + _base_only_nodes()),
    )


def candle_feature_columns() -> list[str]:
    """The model input columns of migration 0005: base features (side groups left out), then
    each higher timeframe's."""
    skip = set(REGIME_COLUMNS) | set(SIDE_FEATURES)
    cols = [c for c in base_graph().outputs() if c not in skip]
    for tf in HIGHER_TIMEFRAMES:
        cols += [f"{name}_{tf}" for name in HIGHER_TIMEFRAME_FEATURES]
    return cols


def feature_columns() -> list[str]:
    """Ordered model input columns: base features, each higher timeframe's, then the side
    groups' (``SIDE_FEATURES``: funding, sentiment)."""
    return candle_feature_columns() + list(SIDE_FEATURES)


def stored_columns() -> list[str]:
    """Every column of the features table after the keys and ``gap_bars``, in the table's
    order: the candle model inputs (migration 0005), the regime labels (``REGIME_COLUMNS``,
    0015), then the side groups (``SIDE_FEATURES``, 0021)."""
    return candle_feature_columns() + list(REGIME_COLUMNS) + list(SIDE_FEATURES)


def spec_document() -> dict[str, object]:
    """Everything that defines the features, as plain data (hashed into the version)."""
    return {
        "base": [asdict(n) for n in base_graph().nodes],
        "higher": [asdict(n) for n in higher_graph().nodes],
        "higher_timeframes": list(HIGHER_TIMEFRAMES),
        "higher_features": list(HIGHER_TIMEFRAME_FEATURES),
        "regime_columns": list(REGIME_COLUMNS),
        "max_carried_gap_bars": MAX_CARRIED_GAP_BARS,
        "order_book_levels": ORDER_BOOK_LEVELS,
        "ops_revision": 1,
    }


FEATURE_SET_VERSION: str = hashlib.sha256(
    json.dumps(spec_document(), sort_keys=True, default=str).encode()
).hexdigest()[:16]


def feature_table_markdown() -> str:
    """The documented table of every feature column (generated from the spec)."""
    base = {n.name: n for n in base_graph().nodes}
    rows = ["| column | group | definition |", "| --- | --- | --- |"]
    for name in base_graph().outputs():
        if name in REGIME_COLUMNS or name in SIDE_FEATURES:
            continue
        n = base[name]
        rows.append(f"| `{name}` | {n.group} | {n.doc} |")
    for tf in HIGHER_TIMEFRAMES:
        for name in HIGHER_TIMEFRAME_FEATURES:
            rows.append(f"| `{name}_{tf}` | {tf} | {base[name].doc}, on closed {tf} candles |")
    for name in SIDE_FEATURES:
        rows.append(f"| `{name}` | {base[name].group} | {base[name].doc} |")
    for name in REGIME_COLUMNS:
        rows.append(f"| `{name}` | {base[name].group} | {base[name].doc} |")
    return "\n".join(rows)
