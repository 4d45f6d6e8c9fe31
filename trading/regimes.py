"""Market regimes per bar, and a strategy's out-of-sample results broken down by regime.

The regime of a bar is the feature specification's pair of labels
(``pipelines.features.spec.REGIME_COLUMNS``, docs/regimes.md): ``regime_trend`` (1 bull,
0 sideways, -1 bear) and ``regime_vol`` (1 high, 0 low volatility), computed by the batch
feature pipeline from the candles up to the bar's close (no look-ahead), stored in the features
table, and not a model input.

Everything is attributed to the regime of the bar whose close DECIDED it, the regime a
regime-dependent rule could have used:

* the after-fee return of the bar after a decision (its position was decided at that close);
* a trade, to the bar before its entry fill;
* the IC pair of bar ``t``: its score against ``open[t+1+h] / open[t+1] - 1``.

Rows: each trend regime, each volatility regime, each of the six pairs, and ``unknown`` for
bars whose regime is still warming up (when there are any). Per row: decision bars and their
share, exposure, trades and hit rate (trades closed with a positive after-fee P&L), the
after-fee return of those bars (compounded per symbol, averaged over symbols) beside buy and
hold's on the same bars, the mean after-fee bar return in basis points with a moving-block
bootstrap CI, and the IC (with its CI on the trend and volatility rows; the pairs are too thin).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from models.metrics import block_bootstrap_mean
from pipelines.features import build_features
from pipelines.features.spec import REGIME_COLUMNS
from trading.backtest import (
    BacktestConfig,
    BacktestResult,
    Candles,
    SignalSeries,
    run_vectorized,
)
from trading.metrics import bar_returns
from trading.model_metrics import block_bootstrap_ic, spearman, tradeable_returns

if TYPE_CHECKING:
    from trading.model_backtest import ModelRun

TREND_NAMES: dict[int, str] = {1: "bull", 0: "sideways", -1: "bear"}
VOL_NAMES: dict[int, str] = {1: "high vol", 0: "low vol"}
UNKNOWN = "unknown"


def regime_labels(candles: Candles, exchange: str = "backtest") -> tuple[np.ndarray, np.ndarray]:
    """(trend, vol) of every bar of ``candles`` as floats, NaN while warming up: the features
    pipeline's regime columns (the same computation as the features table's)."""
    from trading.model_backtest import candle_frame

    frame = build_features(candle_frame(candles, exchange))
    trend, vol = (
        frame.get_column(c).cast(float).fill_null(math.nan).to_numpy() for c in REGIME_COLUMNS
    )
    return np.asarray(trend, dtype=np.float64), np.asarray(vol, dtype=np.float64)


def regime_name(trend: float, vol: float) -> str:
    """``bull / high vol`` and so on; ``unknown`` while either label is warming up."""
    if not (math.isfinite(trend) and math.isfinite(vol)):
        return UNKNOWN
    return f"{TREND_NAMES[int(trend)]} / {VOL_NAMES[int(vol)]}"


def regime_masks(trend: np.ndarray, vol: np.ndarray) -> list[tuple[str, np.ndarray, bool]]:
    """(name, mask, marginal) of every row: trends, volatilities, the pairs, then unknown."""
    t, v = np.asarray(trend), np.asarray(vol)
    out: list[tuple[str, np.ndarray, bool]] = []
    for k, name in TREND_NAMES.items():
        out.append((name, t == k, True))
    for k, name in VOL_NAMES.items():
        out.append((name, v == k, True))
    for kt, tname in TREND_NAMES.items():
        for kv, vname in VOL_NAMES.items():
            out.append((f"{tname} / {vname}", (t == kt) & (v == kv), False))
    unknown = ~(np.isfinite(t) & np.isfinite(v))
    if unknown.any():
        out.append((UNKNOWN, unknown, False))
    return out


@dataclass
class RegimeBook:
    """Per-decision-bar pieces of one or many runs (folds and symbols), in time order per run."""

    symbol: list[np.ndarray] = field(default_factory=list)
    trend: list[np.ndarray] = field(default_factory=list)
    vol: list[np.ndarray] = field(default_factory=list)
    score: list[np.ndarray] = field(default_factory=list)
    realized: list[np.ndarray] = field(default_factory=list)
    next_return: list[np.ndarray] = field(default_factory=list)
    next_hold_return: list[np.ndarray] = field(default_factory=list)
    next_exposed: list[np.ndarray] = field(default_factory=list)
    trades: list[np.ndarray] = field(default_factory=list)  # trades decided at each bar
    wins: list[np.ndarray] = field(default_factory=list)  # of which closed with a profit

    def add(
        self,
        *,
        symbol: str,
        trend: np.ndarray,
        vol: np.ndarray,
        score: np.ndarray,
        realized: np.ndarray,
        strategy_returns: np.ndarray,
        hold_returns: np.ndarray,
        units: np.ndarray,
        trade_bars: Sequence[int],
        trade_won: Sequence[bool],
    ) -> None:
        """One run's decision bars: ``trend``/``vol`` at each bar's close, the model's score
        (NaN where it did not decide) and tradeable return, the strategy's and buy and hold's
        after-fee bar returns and the units held after each bar, and the bar index that decided
        each closed trade (``trade_bars``) with whether it made money."""
        n = len(trend)
        for name, a in (
            ("vol", vol),
            ("score", score),
            ("realized", realized),
            ("strategy_returns", strategy_returns),
            ("hold_returns", hold_returns),
            ("units", units),
        ):
            if len(a) != n:
                raise ValueError(f"regime book {symbol}: {name} has {len(a)} bars, trend {n}")

        def after(a: np.ndarray) -> np.ndarray:  # the bar after each decision
            return np.append(np.asarray(a, dtype=np.float64)[1:], math.nan)

        trades = np.zeros(n, dtype=np.int64)
        wins = np.zeros(n, dtype=np.int64)
        for i, won in zip(trade_bars, trade_won, strict=True):
            if 0 <= i < n:
                trades[i] += 1
                wins[i] += int(won)
        self.symbol.append(np.full(n, symbol, dtype=object))
        self.trend.append(np.asarray(trend, dtype=np.float64))
        self.vol.append(np.asarray(vol, dtype=np.float64))
        self.score.append(np.asarray(score, dtype=np.float64))
        self.realized.append(np.asarray(realized, dtype=np.float64))
        self.next_return.append(after(strategy_returns))
        self.next_hold_return.append(after(hold_returns))
        self.next_exposed.append(after(np.abs(np.asarray(units, dtype=np.float64)) > 0))
        self.trades.append(trades)
        self.wins.append(wins)

    def rows(self, *, horizon_bars: int, n_boot: int = 1000) -> list[dict[str, Any]]:
        """One row per regime (module docs)."""
        if not self.trend:
            return []
        cat = np.concatenate
        symbol = cat(self.symbol)
        trend, vol = cat(self.trend), cat(self.vol)
        score, realized = cat(self.score), cat(self.realized)
        ret, hold = cat(self.next_return), cat(self.next_hold_return)
        exposed, trades, wins = cat(self.next_exposed), cat(self.trades), cat(self.wins)
        total = trend.size
        block = max(10 * int(horizon_bars), 1)
        symbols = list(dict.fromkeys(symbol.tolist()))
        out = []
        for name, mask, marginal in regime_masks(trend, vol):
            bars = int(mask.sum())
            if bars == 0:
                continue
            r = ret[mask]
            known = np.isfinite(r)
            n_trades = int(trades[mask].sum())
            ic_ok = mask & np.isfinite(score) & np.isfinite(realized)
            lo, hi = block_bootstrap_mean(r * 1e4, block=block, n_boot=n_boot)
            row: dict[str, Any] = {
                "regime": name,
                "bars": bars,
                "share": bars / total,
                "exposure": float(exposed[mask][known].mean()) if known.any() else math.nan,
                "trades": n_trades,
                "hit_rate": float(wins[mask].sum() / n_trades) if n_trades else math.nan,
                "return": _compounded(r, symbol[mask], symbols),
                "buy_and_hold_return": _compounded(hold[mask], symbol[mask], symbols),
                "mean_return_bps": float(np.nanmean(r) * 1e4) if known.any() else math.nan,
                "mean_return_bps_ci_low": lo,
                "mean_return_bps_ci_high": hi,
                "ic": spearman(score[mask], realized[mask]),
                "ic_bars": int(ic_ok.sum()),
            }
            if marginal:
                row["ic_ci_low"], row["ic_ci_high"] = block_bootstrap_ic(
                    score[mask], realized[mask], horizon_bars=horizon_bars, n_boot=n_boot
                )
            out.append(row)
        return out


def _compounded(returns: np.ndarray, symbol: np.ndarray, symbols: list[str]) -> float:
    """The after-fee return compounded over ``returns`` per symbol, averaged over the symbols
    that have bars here (per symbol, the rows' returns multiply to its whole return)."""
    per = []
    for s in symbols:
        r = returns[(symbol == s) & np.isfinite(returns)]
        if r.size:
            per.append(float(np.prod(1.0 + r) - 1.0))
    return float(np.mean(per)) if per else math.nan


def trade_decision_bars(ts_ms: np.ndarray, entry_ts_ms: Sequence[int]) -> list[int]:
    """Index of the bar whose close decided each entry (the bar before its fill)."""
    return [int(np.searchsorted(ts_ms, t)) - 1 for t in entry_ts_ms]


def add_model_run(
    book: RegimeBook,
    candles: Candles,
    start: int,
    run: ModelRun,
    hold_equity: np.ndarray,
    initial_cash: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Add a ``backtest --model`` run (decisions from index ``start`` of ``candles``, which
    hold the warm-up before it) to ``book``, with buy and hold's equity on the same bars;
    returns the (trend, vol) labels of the decided bars."""
    trend, vol = (a[start:] for a in regime_labels(candles))
    probs = run.inference.probabilities
    _add_result(
        book,
        run.candles,
        trend,
        vol,
        probs[:, 0] - probs[:, 2],  # NaN where the model did not decide
        run.horizon_bars,
        run.result,
        hold_equity,
        initial_cash,
    )
    return trend, vol


def _add_result(
    book: RegimeBook,
    candles: Candles,
    trend: np.ndarray,
    vol: np.ndarray,
    score: np.ndarray,
    horizon_bars: int,
    result: BacktestResult,
    hold_equity: np.ndarray,
    initial_cash: float,
) -> None:
    trades = result.trades
    book.add(
        symbol=candles.symbol,
        trend=trend,
        vol=vol,
        score=score,
        realized=tradeable_returns(candles.open, horizon_bars),
        strategy_returns=bar_returns(result.equity, initial_cash),
        hold_returns=bar_returns(hold_equity, initial_cash),
        units=result.units,
        trade_bars=trade_decision_bars(candles.ts_ms, [t.entry_ts_ms for t in trades]),
        trade_won=[t.pnl > 0 for t in trades],
    )


def signal_run_regimes(
    candles: Candles, result: BacktestResult, hold: BacktestResult, *, horizon_bars: int = 5
) -> list[dict[str, Any]]:
    """The per-regime rows of a ``backtest --signals`` run over all of ``candles`` (the
    first bars are ``unknown`` while the labels warm up; a signal file has no score: no IC)."""
    book = RegimeBook()
    trend, vol = regime_labels(candles)
    score = np.full(len(candles), math.nan)
    _add_result(
        book, candles, trend, vol, score, horizon_bars, result, hold.equity, result.initial_cash
    )
    return book.rows(horizon_bars=horizon_bars)


def model_run_regimes(
    candles: Candles, start: int, run: ModelRun, hold_equity: np.ndarray, initial_cash: float
) -> list[dict[str, Any]]:
    """The per-regime rows of one ``backtest --model`` run (``RegimeBook.rows``)."""
    book = RegimeBook()
    add_model_run(book, candles, start, run, hold_equity, initial_cash)
    return book.rows(horizon_bars=run.horizon_bars)


# ------------------------------------------------------- regime-dependent rules, measured

# Fixed before measuring (docs/regimes.md), each applied to the decided target signals and
# sizes: a rule is a regime-dependent threshold (flat = no threshold is met) or size.
REGIME_RULES: tuple[str, ...] = (
    "none",
    "flat when sideways",
    "flat when bear",
    "flat in low vol",
    "half size in high vol",
)


def apply_rule(
    rule: str, signal: np.ndarray, size: np.ndarray, trend: np.ndarray, vol: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(signal, size) after ``rule`` (one of ``REGIME_RULES``); an unknown regime (warming up)
    changes nothing."""
    s = np.asarray(signal).astype(np.int8).copy()
    z = np.asarray(size, dtype=np.float64).copy()
    if rule == "none":
        pass
    elif rule == "flat when sideways":
        s[trend == 0] = 0
    elif rule == "flat when bear":
        s[trend == -1] = 0
    elif rule == "flat in low vol":
        s[vol == 0] = 0
    elif rule == "half size in high vol":
        z[vol == 1] *= 0.5
    else:
        raise ValueError(f"unknown regime rule {rule!r}; known: {list(REGIME_RULES)}")
    return s, z


def rule_bar_returns(
    candles: Candles,
    signal: np.ndarray,
    trend: np.ndarray,
    vol: np.ndarray,
    config: BacktestConfig,
) -> dict[str, np.ndarray]:
    """Per rule of ``REGIME_RULES``: the after-fee bar returns of ``signal`` (target directions
    decided at each bar's close) with the rule applied, replayed by the vectorized engine
    (full size, as the baselines). The regime of bar ``t`` is known at its close."""
    ones = np.ones(len(candles))
    out = {}
    for rule in REGIME_RULES:
        s, z = apply_rule(rule, signal, ones, trend, vol)
        result = run_vectorized(candles, SignalSeries.of(s, size=z), config)
        out[rule] = bar_returns(result.equity, config.initial_cash)
    return out
