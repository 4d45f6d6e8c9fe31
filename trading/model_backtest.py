"""`backtest --model`: a registered model over stored candles, through the serving loop.

The decisions come from the SAME per-bar path as ``serve`` (``trading.loop.ServingLoop``):
model output -> confidence -> expected edge -> thresholds -> protections -> risk ->
``trading.step.step``. Only where the model output comes from differs. Features never depend on
decisions, so they are computed for the whole range at once (``pipelines.features``' batch
pipeline, held equal to the online engine on real data) and the model runs batched over every
window (``batch_inference``); the loop then takes each bar's precomputed output instead of
running its online feature engine and one ONNX call per bar. The window, warm-up and
feature-quality rules are the loop's (``ServingLoop._infer``), so a bar falls back to the RSI
rule here exactly when it would in ``serve``, with the same reason.

Equality with ``serve --replay`` holds bit for bit: ONNX Runtime returns the same numbers for
a window whatever the batch of two or more, and ``OnnxPredictor`` runs a lone window (``serve``
of one symbol) as a padded pair, because ORT's batch-of-one kernels round differently in the
last float32 bit. See ``tests/trading/test_model_backtest.py``.

The measures follow ``EVALUATION.md`` (``trading.model_metrics``): IC of ``p_buy - p_sell``
against the tradeable return with a moving-block bootstrap CI, calibration (log-loss, Brier,
ECE) and per-class precision/recall against the classes of the label rule the model was trained
with, the strategy's figures after fees and slippage, and the baselines (buy and hold, the RSI
rule, flat, the majority class) on the same bars and costs.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from models.registry import ModelRecord
from models.runtime import OnnxPredictor
from pipelines.features import FEATURE_SET_VERSION, build_features, feature_columns
from pipelines.labels import LabelConfig, make_labels
from pipelines.progress import each
from pipelines.resample import timeframe_ms
from trading.backtest import (
    BacktestConfig,
    BacktestResult,
    Candles,
    SignalSeries,
    buy_and_hold,
    run_vectorized,
)
from trading.broker import PaperBroker, SlippageModel
from trading.decide import PrecomputedBar
from trading.decision import RsiRule, rsi_rule_signals
from trading.evaluation import majority_class_signals, summarize
from trading.fallback import ModelManager
from trading.loop import LoopConfig, ServingLoop
from trading.loop_config import with_volatility_choices
from trading.market import Tick
from trading.microstructure import Timeline, read_timeline
from trading.model_metrics import (
    block_bootstrap_ic,
    brier_score,
    ece,
    log_loss,
    precision_recall,
    spearman,
    tradeable_returns,
)
from trading.regimes import model_run_regimes
from trading.risk import RiskLimits
from trading.writer import WriteBatch

WARM_UP_REASON = "warm-up: window not complete"
# windows per ONNX Runtime call: big enough to batch, small enough that a call's activations
# stay in the core's cache (1 core, default model: 256 ran ~30 % faster than 1024)
INFERENCE_CHUNK = 256
DRAIN_EVERY = 1024  # ticks between moves of the loop's queued rows into the run's results
OUTPUT_COLUMNS = (
    "ts",
    "symbol",
    "p_buy",
    "p_hold",
    "p_sell",
    "confidence",
    "score",
    "signal",
    "reason",
)


class ModelBacktestError(ValueError):
    """The model cannot be backtested on these candles (unloadable, other feature set...)."""


# ---------------------------------------------------------------- batch features + inference


@dataclass(frozen=True)
class BatchInference:
    """The model's output for every bar, as ``ServingLoop._infer`` would give it.

    Where the loop's RSI fallback decides (window not complete, missing inputs, an ONNX Runtime
    error) ``fallback_reason`` says why (the loop's words) and the probabilities are NaN."""

    ts_ms: np.ndarray  # (n,) int64
    probabilities: np.ndarray  # (n, 3) float64 [buy, hold, sell]
    model_confidence: np.ndarray  # (n,) float64
    present_fraction: np.ndarray  # (n,) share of the model's inputs present at the bar
    gap_bars: np.ndarray  # (n,) int64, missing bars before each candle
    fallback_reason: tuple[str | None, ...]

    @property
    def has_model(self) -> np.ndarray:
        return np.array([r is None for r in self.fallback_reason], dtype=bool)


def candle_frame(candles: Candles, exchange: str = "backtest") -> pl.DataFrame:
    """``candles`` as the frame ``pipelines.features.build_features`` takes."""
    n = len(candles)
    return pl.DataFrame(
        {
            "exchange": [exchange] * n,
            "symbol": [candles.symbol] * n,
            "timeframe": [candles.timeframe] * n,
            "ts": pl.Series(candles.ts_ms, dtype=pl.Int64).cast(pl.Datetime("ms", "UTC")),
            "open": candles.open,
            "high": candles.high,
            "low": candles.low,
            "close": candles.close,
            "volume": candles.volume,
        }
    )


def feature_matrix(candles: Candles, side: Timeline | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(features (n, n_features) float32 in ``feature_columns()`` order, gap_bars (n,)).

    float32 with NaN for a missing value, as the loop's window buffer holds them. ``side``:
    the stored order books and trades, joined as of each close."""
    order_book, trades = side.frames() if side is not None else (None, None)
    frame = build_features(
        candle_frame(candles),
        order_book=order_book,
        trades=trades,
        side=side.side_inputs() if side is not None else None,
    )
    values = frame.select(feature_columns()).to_numpy().astype(np.float32)
    return values, frame["gap_bars"].to_numpy().astype(np.int64)


def batch_inference(
    candles: Candles,
    predictor: OnnxPredictor,
    *,
    min_feature_quality: float,
    chunk: int = INFERENCE_CHUNK,
    side: Timeline | None = None,
) -> BatchInference:
    """Features for every bar in one batch, then the model on every window it would serve."""
    info = predictor.info
    if tuple(info.feature_columns) != tuple(feature_columns()):
        raise ModelBacktestError(
            f"{predictor.path}: its feature columns differ from this engine's (same feature "
            "set version, other order?)"
        )
    n, length = len(candles), info.window_len
    features, gap_bars = feature_matrix(candles, side)
    used = features[:, predictor.used_index]
    finite = np.isfinite(used)
    present = finite.mean(axis=1) if used.shape[1] else np.ones(n)
    # a window is usable when every used input of its `length` rows is finite: count the bad
    # rows in each window with a cumulative sum
    bad = np.concatenate(([0], np.cumsum(~finite.all(axis=1))))
    ends = np.arange(n)
    complete = ends + 1 >= length
    bad_in_window = np.where(complete, bad[ends + 1] - bad[np.maximum(ends + 1 - length, 0)], 1)
    ok = complete & (bad_in_window == 0) & (present >= min_feature_quality)
    reasons: list[str | None] = [None] * n
    for i in np.flatnonzero(~ok):
        reasons[i] = (
            WARM_UP_REASON
            if not complete[i]
            else f"feature quality {float(present[i]):.2f} (missing inputs)"
        )
    probabilities = np.full((n, 3), np.nan)
    confidence = np.full(n, np.nan)
    rows = np.flatnonzero(ok)
    # (n - length + 1, length, n_features): a strided view, no copy; indexing it with a chunk's
    # window starts makes that chunk's one contiguous copy
    windows = np.lib.stride_tricks.sliding_window_view(features, length, axis=0).transpose(0, 2, 1)
    for start in range(0, rows.size, chunk):
        part = rows[start : start + chunk]
        batch = windows[part - length + 1]
        try:
            # every used input of these windows is finite (``ok`` above): no second check
            out = predictor.predict(batch, check_finite=False)
        except Exception as exc:  # as the loop: an ONNX Runtime error -> the fallback decides
            for i in part:
                reasons[i] = f"ONNX Runtime error: {type(exc).__name__}: {exc}"
            continue
        probabilities[part] = out.probabilities.astype(np.float64)
        confidence[part] = out.confidence.astype(np.float64)
    return BatchInference(
        candles.ts_ms, probabilities, confidence, present, gap_bars, tuple(reasons)
    )


# ---------------------------------------------------------------- the loop, bar by bar


@dataclass
class ModelRun:
    """What the serving loop did on each decision bar (``start`` on) of ``candles``."""

    candles: Candles  # decision bars only
    model_id: str
    horizon_bars: int
    inference: BatchInference  # decision bars only
    signal: np.ndarray  # (n,) target direction after protections and risk
    confidence: np.ndarray  # (n,) confidence of the decision (what the gate saw)
    reason: list[str]
    equity: np.ndarray
    units: np.ndarray
    orders: list[dict[str, Any]]  # the loop's order rows, final state, in creation order
    fills: list[dict[str, Any]]
    result: BacktestResult
    events: list[tuple[int, str, str | None, str]]
    inference_seconds: float = 0.0  # batch features + ONNX Runtime over every window
    loop_seconds: float = 0.0  # the serving loop, bar by bar
    # the same two stages in CPU seconds of this process (wall time counts what other
    # processes on a shared machine take from it)
    inference_cpu_seconds: float = 0.0
    loop_cpu_seconds: float = 0.0


class _Collector:
    """Moves the rows the loop queues for the warehouse into compact per-bar results."""

    def __init__(self) -> None:
        self.signals: dict[int, dict[str, Any]] = {}
        self.keyed = WriteBatch()  # orders and fills: later rows update earlier ones by key

    def drain(self, loop: ServingLoop) -> None:
        tables = loop.batch.tables
        loop.batch = WriteBatch()
        for row in tables.get("signals", {}).values():
            self.signals[int(row["ts"])] = row
        for table in ("orders", "fills"):
            for key, row in tables.get(table, {}).items():
                self.keyed.add(table, key, row)


def _fixed_lookup(record: ModelRecord) -> Callable[[], ModelRecord]:
    return lambda: record


def run_model(
    candles: Candles,
    record: ModelRecord,
    config: LoopConfig,
    *,
    start: int = 0,
    home: Path | None = None,
    slippage: SlippageModel | None = None,
    side: Timeline | None = None,
) -> ModelRun:
    """Run ``record``'s model over ``candles`` through a ``ServingLoop`` without a writer.

    Bars before index ``start`` only warm the loop's candle-derived state (features, volatility,
    RSI), as ``serve`` warms before its first served candle; decisions start at ``start``.
    ``home``: where the loop looks for its manual kill file (default: a fresh empty folder, so a
    kill file of a running ``serve`` does not stop a backtest). ``slippage``: the paper
    broker's slippage model (default: ``config.slippage_fraction`` on every fill; the stress
    scenarios pass a per-bar schedule). ``side``: the stored order books and trades of the
    symbol (``trading.microstructure``): in the features, and each bar's latest book in its
    cost estimate and paper fills, as ``serve`` has them."""
    if len(candles) == 0 or start >= len(candles):
        raise ModelBacktestError(f"no candles of {candles.symbol} to backtest")
    manager = ModelManager(_fixed_lookup(record), FEATURE_SET_VERSION)
    events = manager.refresh()
    if manager.predictor is None or manager.model_id != record.model_id:
        why = "; ".join(e.message for e in events) or manager.fallback_reason
        raise ModelBacktestError(f"model {record.model_id} cannot run here: {why}")
    predictor = manager.predictor
    config = dataclasses.replace(
        config,
        timeframe=candles.timeframe,
        flush_every_steps=10**12,  # no writer; the collector takes the rows
        model_check_every_steps=10**9,  # one fixed model
    )
    t0, c0 = time.perf_counter(), time.process_time()
    inference = batch_inference(
        candles, predictor, min_feature_quality=config.min_feature_quality, side=side
    )
    t1, c1 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="tradeloop-backtest-") as tmp:
        broker = (
            None if slippage is None else PaperBroker(config.fees, slippage, allow_margin=False)
        )
        loop = ServingLoop(
            config,
            manager=manager,
            writer=None,
            home=home or Path(tmp),
            broker=broker,
            control_files=home is not None,  # nothing can write a kill file into a fresh folder
            log_events=False,
        )
        collected, equity, units = _drive(loop, candles, inference, start, side)
    t2, c2 = time.perf_counter(), time.process_time()
    decided = candles.slice(start, len(candles))
    ts = decided.ts_ms
    rows = [collected.signals[int(t)] for t in ts]
    p = loop.state.portfolio
    kill = [e for e in loop.events if e[1] == "kill" and "fired" in e[3]]
    kill_bar = int(np.searchsorted(ts, kill[0][0])) if kill else None
    result = BacktestResult(
        decided.symbol,
        decided.timeframe,
        ts,
        equity,
        units,
        list(p.trades),
        [],
        p.fees_paid,
        p.traded_notional,
        config.initial_cash,
        kill_bar,
        "serving-loop",
    )
    return ModelRun(
        candles=decided,
        model_id=record.model_id,
        horizon_bars=predictor.info.horizon_bars or config.default_horizon_bars,
        inference=_slice_inference(inference, start),
        signal=np.array([int(r["signal"]) for r in rows], dtype=np.int8),
        confidence=np.array([float(r["confidence"]) for r in rows]),
        reason=[str(r["reason"]) for r in rows],
        equity=equity,
        units=units,
        orders=list(collected.keyed.tables.get("orders", {}).values()),
        fills=list(collected.keyed.tables.get("fills", {}).values()),
        result=result,
        events=list(loop.events),
        inference_seconds=t1 - t0,
        loop_seconds=t2 - t1,
        inference_cpu_seconds=c1 - c0,
        loop_cpu_seconds=c2 - c1,
    )


def _slice_inference(inf: BatchInference, start: int) -> BatchInference:
    return BatchInference(
        inf.ts_ms[start:],
        inf.probabilities[start:],
        inf.model_confidence[start:],
        inf.present_fraction[start:],
        inf.gap_bars[start:],
        inf.fallback_reason[start:],
    )


def _drive(
    loop: ServingLoop,
    candles: Candles,
    inference: BatchInference,
    start: int,
    side: Timeline | None = None,
) -> tuple[_Collector, np.ndarray, np.ndarray]:
    """Feed every bar to the loop: warm-up bars through ``warm``, the rest through ``on_tick``
    with the bar's precomputed model output. Returns the rows and per-bar equity and units."""
    collector = _Collector()
    n = len(candles) - start
    equity = np.empty(n)
    units = np.empty(n)
    step_ms = loop.step_ms
    symbol = candles.symbol
    probs, conf = inference.probabilities, inference.model_confidence
    present, gaps, reasons = (
        inference.present_fraction,
        inference.gap_bars,
        inference.fallback_reason,
    )
    portfolio = loop.state
    if side is not None:
        side.reset()
    for i in each(range(len(candles)), "backtest (bars)"):
        bar = candles.bar(i)
        close = bar.ts_ms + step_ms
        events = (side.until(close),) if side is not None else ()
        # Any: the loop's TickLike protocol declares settable fields; Tick is frozen
        tick: Any = Tick(close, (bar,), side=events)
        if i < start:
            loop.warm(tick)
            continue
        why = reasons[i]
        # as the loop's own inference: a fallback bar carries only its reason and gap
        pre = (
            PrecomputedBar.fallback(why, int(gaps[i]))
            if why is not None
            else PrecomputedBar(probs[i], float(conf[i]), float(present[i]), None, int(gaps[i]))
        )
        loop.on_tick(tick, precomputed={symbol: pre})
        k = i - start
        equity[k] = portfolio.portfolio.equity()
        units[k] = portfolio.portfolio.units(symbol)
        if (k + 1) % DRAIN_EVERY == 0:
            collector.drain(loop)
    collector.drain(loop)
    return collector, equity, units


# ---------------------------------------------------------------- measures


def label_config_of(hyperparameters: Mapping[str, Any], horizon_bars: int) -> LabelConfig:
    """The label rule a model was trained with, from its registry hyperparameters (the
    ``TrainConfig`` fields that ``models.training.label_config`` maps); a model registered
    without them (a hand-built ONNX file) gets the default rule at its horizon."""
    known = {f.name for f in dataclasses.fields(LabelConfig)}
    values: dict[str, Any] = {"horizon_bars": int(hyperparameters.get("horizon_bars") or 0)}
    values["horizon_bars"] = values["horizon_bars"] or horizon_bars
    for key in (
        "vol_window_bars",
        "threshold_scale",
        "min_threshold_fraction",
        "round_trip_cost_fraction",
        "take_profit_vol",
        "stop_loss_vol",
    ):
        if key in known and hyperparameters.get(key) is not None:
            values[key] = hyperparameters[key]
    if "method" in known and hyperparameters.get("label_method") is not None:
        values["method"] = hyperparameters["label_method"]
    return LabelConfig(**values)


def realized_classes(candles: Candles, label_config: LabelConfig) -> np.ndarray:
    """The class each bar turned out to be under ``label_config`` (0 buy, 1 hold, 2 sell; NaN
    where the label needs data the candles do not hold)."""
    frame = pl.DataFrame(
        {
            "ts": pl.Series(candles.ts_ms, dtype=pl.Int64).cast(pl.Datetime("ms", "UTC")),
            "open": candles.open,
            "close": candles.close,
        }
    )
    label = make_labels(frame, label_config)["label"]
    return label.cast(pl.Float64).fill_null(np.nan).to_numpy()


def baseline_results(
    candles: Candles, labels: np.ndarray, config: BacktestConfig, horizon_bars: int
) -> dict[str, BacktestResult]:
    """Buy and hold, the RSI rule, flat and the causal majority class on the same bars, fees
    and slippage (full position size, as ``backtest --signals``' baselines)."""
    allow_short = config.limits.allow_short
    rsi = rsi_rule_signals(candles.close, RsiRule(allow_short=allow_short))
    majority = majority_class_signals(labels, horizon_bars, allow_short)
    return {
        "buy_and_hold": buy_and_hold(candles, config),
        "rsi_rule": run_vectorized(candles, SignalSeries.of(rsi), config),
        "flat": run_vectorized(candles, SignalSeries.of(np.zeros(len(candles), np.int8)), config),
        "majority_class": run_vectorized(candles, SignalSeries.of(majority), config),
    }


def trade_sources(run: ModelRun) -> tuple[int, int]:
    """(model_trades, fallback_trades): closed trades by who decided their entry (the bar
    before the entry fill)."""
    has = run.inference.has_model
    model = fallback = 0
    for trade in run.result.trades:
        decided_at = int(np.searchsorted(run.candles.ts_ms, trade.entry_ts_ms)) - 1
        if 0 <= decided_at < has.size and has[decided_at]:
            model += 1
        else:
            fallback += 1
    return model, fallback


def model_measures(
    run: ModelRun, labels: np.ndarray, *, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """IC with its block-bootstrap CI, calibration and classification of the model's bars."""
    h = run.horizon_bars
    probs = run.inference.probabilities
    score = probs[:, 0] - probs[:, 2]
    realized = tradeable_returns(run.candles.open, h)
    lo, hi = block_bootstrap_ic(score, realized, horizon_bars=h, n_boot=n_boot, seed=seed)
    has = run.inference.has_model
    known = has & np.isfinite(labels)
    y = labels[known].astype(np.int64)
    p = probs[known]
    predicted = p.argmax(axis=1)
    counts = np.bincount(y, minlength=3)
    out: dict[str, Any] = {
        "ic": spearman(score, realized),
        "ic_ci_low": lo,
        "ic_ci_high": hi,
        "ic_bars": int((np.isfinite(score) & np.isfinite(realized)).sum()),
        "ic_block_bars": max(10 * h, 1),
        "ic_return": f"open[t+1+{h}]/open[t+1]-1",
        "model_bars": int(has.sum()),
        "fallback_bars": int((~has).sum()),
        "labelled_bars": int(y.size),
        "log_loss": log_loss(y, p),
        "brier": brier_score(y, p),
        "ece": ece(y, p),
        "accuracy": float((predicted == y).mean()) if y.size else math.nan,
        "majority_class_accuracy": float(counts.max() / y.size) if y.size else math.nan,
    }
    out.update(precision_recall(y, predicted))
    out["model_trades"], out["fallback_trades"] = trade_sources(run)
    return out


def evaluate_run(
    run: ModelRun,
    labels: np.ndarray,
    config: LoopConfig,
    *,
    n_trials: int = 1,
    label_config: LabelConfig | None = None,
) -> tuple[dict[str, Any], dict[str, BacktestResult]]:
    """The JSON summary: every ``backtest --signals`` figure of the loop's equity and trades,
    the model's measures (``model_measures``) and the baselines."""
    summary = summarize(run.result, n_trials)
    summary.update(
        symbol=run.candles.symbol,
        timeframe=run.candles.timeframe,
        strategy=f"model {run.model_id}",
        model_id=run.model_id,
        horizon_bars=run.horizon_bars,
        fee_fraction=config.fees.taker_fraction,
        slippage_fraction=config.slippage_fraction,
        first_ts_ms=int(run.candles.ts_ms[0]),
        last_ts_ms=int(run.candles.ts_ms[-1]),
    )
    if label_config is not None:
        summary["label_rule"] = dataclasses.asdict(label_config)
    summary.update(model_measures(run, labels))
    base_config = BacktestConfig(
        initial_cash=config.initial_cash,
        fees=config.fees,
        slippage_fraction=config.slippage_fraction,
        limits=RiskLimits(allow_short=config.limits.allow_short),
    )
    base = baseline_results(run.candles, labels, base_config, run.horizon_bars)
    summary["baselines"] = {k: summarize(v) for k, v in base.items()}
    return summary, base


def output_frame(run: ModelRun) -> pl.DataFrame:
    """One row per decision bar: ts, symbol, p_buy, p_hold, p_sell, confidence (of the
    decision, what the gate saw), score (p_buy - p_sell), signal (target direction), reason."""
    probs = run.inference.probabilities
    n = len(run.candles)
    return pl.DataFrame(
        {
            "ts": pl.Series(run.candles.ts_ms, dtype=pl.Int64).cast(pl.Datetime("ms", "UTC")),
            "symbol": [run.candles.symbol] * n,
            "p_buy": probs[:, 0],
            "p_hold": probs[:, 1],
            "p_sell": probs[:, 2],
            "confidence": run.confidence,
            "score": probs[:, 0] - probs[:, 2],
            "signal": run.signal.astype(np.int64),
            "reason": run.reason,
        }
    ).with_columns(pl.col(c).fill_nan(None) for c in ("p_buy", "p_hold", "p_sell", "score"))


def write_output(run: ModelRun, path: Path) -> Path:
    """``output_frame`` as CSV or Parquet, by the file's extension."""
    frame = output_frame(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.write_parquet(path)
    elif path.suffix == ".csv":
        frame.write_csv(path)
    else:
        raise ModelBacktestError(f"--output {path}: use a .csv or .parquet file name")
    return path


# ---------------------------------------------------------------- entry points


def resolve_model(con: Any, model: str, name: str = "signal") -> ModelRecord:
    """``champion`` (of ``name``) or a model id, from the registry."""
    from models.registry import RegistryError, champion, get_model, list_models

    if model == "champion":
        record = champion(con, name)
        if record is None:
            models = list_models(con, name)
            hint = (
                f"the newest, {models[-1].model_id}, is a {models[-1].status} (its promotion "
                "figures: `tradeloop models list`); measure it with "
                f"`tradeloop backtest --model {models[-1].model_id}`"
                if models
                else "train one (`tradeloop retrain`)"
            )
            raise ModelBacktestError(f"no champion model {name!r} in the registry; {hint}")
        return record
    try:
        return get_model(con, model)
    except (RegistryError, LookupError) as exc:
        raise ModelBacktestError(f"--model {model!r}: {exc}") from exc


def load_range(
    con: Any,
    symbol: str,
    timeframe: str,
    exchange: str,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> tuple[Candles, int]:
    """(candles, index of the first decision bar): the stored candles opened in
    ``[start_ms, end_ms)``, preceded by the candles their features and a model window need
    (what ``serve`` warms on before its first served candle)."""
    import datetime as dt

    from pipelines.features.rebuild import history_start_ms
    from pipelines.resample import timeframe_ms
    from trading.service import MODEL_WINDOW_MARGIN_BARS
    from warehouse.readers import read_candles

    def utc(ms: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)

    warm_from = None
    if start_ms is not None:
        margin = MODEL_WINDOW_MARGIN_BARS * timeframe_ms(timeframe)
        warm_from = history_start_ms(start_ms - margin, timeframe)
    frame = pl.from_arrow(
        read_candles(
            con,
            symbols=[symbol],
            timeframe=timeframe,
            exchange=exchange,
            after=None if warm_from is None else utc(warm_from - 1),
            before=None if end_ms is None else utc(end_ms),
        )
    )
    assert isinstance(frame, pl.DataFrame)
    candles = Candles.from_frame(frame, symbol, timeframe)
    first = 0 if start_ms is None else int(np.searchsorted(candles.ts_ms, start_ms))
    if first >= len(candles):
        raise ModelBacktestError(
            f"no {timeframe} candles of {symbol} on {exchange} in the warehouse"
            + (" in that --timerange" if start_ms is not None or end_ms is not None else "")
        )
    return candles, first


def backtest_candles(
    candles: Candles,
    record: ModelRecord,
    config: LoopConfig,
    *,
    start: int = 0,
    n_trials: int = 1,
    output: Path | None = None,
    reports_dir: Path | None = None,
    side: Timeline | None = None,
) -> tuple[dict[str, Any], ModelRun]:
    """Run and measure ``record`` on ``candles`` (decisions from index ``start``); write the
    per-bar ``output`` file and the HTML/JSON report when asked."""
    started = time.perf_counter()
    run = run_model(candles, record, config, start=start, side=side)
    decided_s = time.perf_counter() - started
    label_config = label_config_of(record.hyperparameters, run.horizon_bars)
    labels = realized_classes(candles, label_config)[start:]
    summary, base = evaluate_run(run, labels, config, n_trials=n_trials, label_config=label_config)
    hold = np.asarray(base["buy_and_hold"].equity, dtype=np.float64)
    summary["regimes"] = model_run_regimes(candles, start, run, hold, config.initial_cash)
    sigma = config.volatility_choice(candles.symbol)  # what stops, take-profit and sizing used
    summary["sigma"], summary["volatility"] = sigma.describe(), sigma.to_dict()
    summary["decision_seconds"] = decided_s
    summary["inference_seconds"] = run.inference_seconds
    summary["loop_seconds"] = run.loop_seconds
    summary["candles_per_second"] = len(candles) / decided_s if decided_s > 0 else None
    summary["stress"] = model_stress(candles, record, config, start=start)
    if output is not None:
        summary["output"] = str(write_output(run, output))
    summary["exchange"] = config.exchange
    if reports_dir is not None:
        from trading.evaluation import figures
        from trading.report import write_report

        name = f"{run.candles.symbol.replace('/', '_')}-{run.candles.timeframe}-model"
        ev = {
            "result": run.result,
            "baseline_results": base,
            "summary": summary,
            "stress": summary["stress"],
            "stress_strategy": f"replayed by the model {run.model_id} through the serving loop",
            "candles": run.candles,
        }
        html_path, json_path = write_report(name, summary, figures(ev), reports_dir)
        summary["report_html"], summary["report_json"] = str(html_path), str(json_path)
    return summary, run


def model_stress(
    candles: Candles, record: ModelRecord, config: LoopConfig, *, start: int = 0
) -> list[dict[str, Any]]:
    """``trading.stress``'s scenarios replayed by the model through the serving loop: each one
    damages the decided part of ``candles`` half-way through (features and model see the damage
    as they would live) and reports drawdown, return and what the risk controls did."""
    from trading.broker import ScheduledSlippage
    from trading.metrics import drawdown
    from trading.stress import SCENARIOS, stressed_candles

    n = len(candles)
    at = (start + (n - start) / 2) / n
    rows = []
    for name in SCENARIOS:
        damaged, overrides = stressed_candles(candles, name, at_fraction=at)
        wide = max(20 * config.slippage_fraction, 0.005)
        slip = ScheduledSlippage(config.slippage_fraction, {t: wide for t in overrides})
        first = int(np.searchsorted(damaged.ts_ms, candles.ts_ms[start]))
        run = run_model(damaged, record, config, start=first, slippage=slip)
        equity = np.concatenate(([config.initial_cash], run.equity))
        rows.append(
            {
                "scenario": name,
                "bars": len(run.equity),
                "total_return": float(equity[-1] / equity[0] - 1),
                "max_drawdown": float(drawdown(equity).min()),
                "worst_bar_return": float(np.min(equity[1:] / equity[:-1] - 1)),
                "trades": len(run.result.trades),
                "model_trades": trade_sources(run)[0],
                "kill_switch_fired": run.result.kill_switch_bar is not None,
                "fees_paid": run.result.fees_paid,
            }
        )
    return rows


def loop_config(fee: float, slippage: float | None, base: LoopConfig | None = None) -> LoopConfig:
    """``serve``'s loop settings with the backtest's costs (``slippage`` None: serve's)."""
    from trading.domain import FeeModel

    config = base or LoopConfig()
    return dataclasses.replace(
        config,
        fees=FeeModel(fee, fee),
        slippage_fraction=config.slippage_fraction if slippage is None else slippage,
    )


def model_backtest(
    con: Any,
    *,
    symbol: str,
    timeframe: str,
    exchange: str,
    model: str = "champion",
    model_name: str = "signal",
    start_ms: int | None = None,
    end_ms: int | None = None,
    config: LoopConfig | None = None,
    n_trials: int = 1,
    output: Path | None = None,
    reports_dir: Path | None = None,
) -> dict[str, Any]:
    """``tradeloop backtest --model``: the registered ``model`` (``champion`` or an id) over the
    stored candles of one series in ``[start_ms, end_ms)``; the JSON-ready summary."""
    record = resolve_model(con, model, model_name)
    candles, start = load_range(con, symbol, timeframe, exchange, start_ms=start_ms, end_ms=end_ms)
    config = dataclasses.replace(config or LoopConfig(), exchange=exchange, timeframe=timeframe)
    # sigma: chosen on the stored candles before the first decision only, as serve chooses
    config = with_volatility_choices(config, con, [symbol], before_ms=int(candles.ts_ms[start]))
    step = timeframe_ms(timeframe)
    lo, hi = int(candles.ts_ms[0]) - step, int(candles.ts_ms[-1]) + step
    summary, _ = backtest_candles(
        candles,
        record,
        config,
        start=start,
        n_trials=n_trials,
        output=output,
        reports_dir=reports_dir,
        side=read_timeline(con, exchange, symbol, lo, hi),
    )
    summary["exchange"] = exchange
    summary["in_sample_bars"] = in_sample_bars(con, record.model_id, candles.ts_ms[start:])
    return summary


def in_sample_bars(con: Any, model_id: str, ts_ms: np.ndarray) -> int | None:
    """How many of the decided bars precede the model's out-of-sample test window (the model
    trained or calibrated on them, so their figures are in sample); None when the registry
    holds no test window for it."""
    row = con.execute(
        "SELECT epoch_ms(min(window_start)) FROM model_metrics "
        "WHERE model_id = ? AND window_name = 'test'",
        [model_id],
    ).fetchone()
    if not row or row[0] is None:
        return None
    return int((np.asarray(ts_ms) < int(row[0])).sum())
