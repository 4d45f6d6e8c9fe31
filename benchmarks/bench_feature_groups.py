"""What each feature group adds (issue 15, item 4): ``trading.feature_groups`` on real data
where it exists and on the simulated source otherwise.

Datasets (one step each, so each can run in its own process):

* ``real_pairs``: the real ETH/BTC and LTC/BTC 5m files (20 days): candles and
  multi-timeframe; no order book, trades, funding or news exist for them;
* ``real_trades``: the real XRP/ETH 5m file with its 12,477 public trades (2.5 days): candles
  and trade flow (no order book was recorded; the multi-timeframe group is left out, its 1h
  warm-up would take a day of the 2.5);
* ``real_futures``: the real XRP/USDT:USDT perpetual (100 1h candles, 8h funding rates, 1h mark
  candles): funding and basis. Checked for size; reported as not measurable when a
  walk-forward cannot be fit on it;
* ``simulated``: two symbols of the simulated exchange (5m candles from its 1m ones), an order
  book snapshot one second before each close, its public trades, the simulated perpetual's
  funding rates, mark candles and open interest (``pipelines.simulated_futures``) and the
  simulated news source's headlines scored by VADER: every group.

The feature columns are the feature set's (``feature_columns()``), built by
``build_features`` with the order book, the trades and the side inputs
(``pipelines.features.side.SideInputs``: funding, mark, open interest, scored headlines).

Run: ``python -m benchmarks.bench_feature_groups [STEP ...]`` with STEP among real_pairs,
real_trades, real_futures, simulated, record (none: all, what ``make bench`` runs). Steps
write JSON under ``$TMPDIR/tradeloop-bench-feature-groups``; ``record`` writes the RESULTS.md
section "Feature groups: what each adds (issue 15)".
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from benchmarks.results import record as record_section

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
WORK = Path(tempfile.gettempdir()) / "tradeloop-bench-feature-groups"
SECTION = "Feature groups: what each adds (issue 15)"
TIMEFRAME = "5m"
FOLDS, TRAIN_DAYS, TEST_DAYS, EPOCHS, HORIZON = 3, 6.0, 3.0, 3, 5
# the short real trade window: 2 folds of 6 h after 18 h of training
SHORT_FOLDS, SHORT_TRAIN_DAYS, SHORT_TEST_DAYS = 2, 0.75, 0.25
SIM_SYMBOLS = ("BTC/USDT", "ETH/USDT")
SIM_WARM_UP_DAYS = 2.0
IMPORTANCE_REPEATS = 2
DAY_MS = 86_400_000
CANDLE_COLUMNS = ("exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")


# ---------------------------------------------------------------- data


def _candle_file(path: Path, symbol: str, timeframe: str) -> pl.DataFrame:
    frame = pl.read_ipc(path).rename({"date": "ts"})
    return frame.with_columns(
        pl.col("ts").dt.convert_time_zone("UTC").dt.cast_time_unit("ms"),
        exchange=pl.lit("binance"),
        symbol=pl.lit(symbol),
        timeframe=pl.lit(timeframe),
    ).select(CANDLE_COLUMNS)


def _samples(
    series: list[tuple[pl.DataFrame, pl.DataFrame]], columns: Sequence[str], config: Any
) -> Any:
    from models.data import FeaturizedSeries, assemble_samples
    from models.training import label_config
    from pipelines.features import FEATURE_SET_VERSION

    return assemble_samples(
        [FeaturizedSeries(c.sort("ts"), f.sort("ts")) for c, f in series],
        window_len=config.window_len,
        label_config=label_config(config),
        feature_columns=list(columns),
        feature_set_version=FEATURE_SET_VERSION,
    )


def _simulated() -> tuple[list[tuple[pl.DataFrame, pl.DataFrame]], dict[str, Any]]:
    from pipelines.features import build_features
    from pipelines.features.side import SideInputs, scored_news
    from pipelines.news import SimulatedNewsSource, VaderScorer
    from pipelines.simulated_exchange import SimulatedExchange
    from pipelines.simulated_futures import simulated_futures

    exchange = SimulatedExchange()
    days = SIM_WARM_UP_DAYS + FOLDS * TEST_DAYS + TRAIN_DAYS + 0.5
    since = exchange.config.origin_ms + DAY_MS  # a day in: the perpetual's history before it
    until = since + int(days * DAY_MS)
    items = SimulatedNewsSource(exchange, SIM_SYMBOLS, since - DAY_MS, until).fetch()
    news = scored_news(items, VaderScorer())
    out = []
    for symbol in SIM_SYMBOLS:
        candles = pl.from_arrow(exchange.candles(symbol, since, until, timeframe=TIMEFRAME))
        assert isinstance(candles, pl.DataFrame)
        closes = candles["ts"].dt.epoch("ms").to_numpy() + 5 * 60_000 - 1_000
        books = pl.DataFrame(
            [{"ts": int(t), **exchange.order_book(symbol, int(t), depth=5)} for t in closes]
        ).with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC")))
        raw = exchange.trade_arrays(symbol, since, until)
        trades = pl.DataFrame(
            {
                "ts": pl.Series(raw["ts"]).cast(pl.Datetime("ms", "UTC")),
                "side": np.where(raw["is_buy"], "buy", "sell"),
                "amount": raw["amount"],
            }
        )
        contract = f"{symbol}:{symbol.split('/')[1]}"

        def perp(kind: str, contract: str = contract, **kw: Any) -> pl.DataFrame:
            table = pl.from_arrow(
                simulated_futures(exchange, contract, kind, since - DAY_MS, until, **kw)
            )
            assert isinstance(table, pl.DataFrame)
            return table

        side = SideInputs(
            funding=perp("funding_rates"),
            mark=perp("mark_candles", timeframe=TIMEFRAME),
            open_interest=perp("open_interest", timeframe="1h"),
            news=news,
        )
        out.append((candles, build_features(candles, order_book=books, trades=trades, side=side)))
    meta = {
        "data": f"simulated exchange, {', '.join(SIM_SYMBOLS)} {TIMEFRAME}, {days:g} days; "
        "order book snapshots, trades, the perpetual's funding/mark/open interest, "
        f"{len(items)} simulated headlines (VADER)",
        "headlines": len(items),
    }
    return out, meta


# ---------------------------------------------------------------- the walk-forward


def _config(horizon: int = HORIZON) -> Any:
    from models.training import TrainConfig
    from trading.loop import LoopConfig
    from warehouse import Settings

    loop = LoopConfig.from_settings(Settings())
    return TrainConfig(
        epochs=EPOCHS,
        horizon_bars=horizon,
        round_trip_cost_fraction=loop.costs.round_trip,
        feature_selection=False,  # the groups themselves are compared
        importance_repeats=0,
        threads=1,
        progress=False,
    ), loop


class _Fitted:
    """``models.training.fit_ensemble``'s model as ``trading.feature_groups`` reads it."""

    def __init__(self, train: Any, config: Any) -> None:
        from models.training import fit_ensemble

        self.ensemble = fit_ensemble(train, config)
        self.class_forward_returns = self.ensemble.class_forward_returns

    def probabilities(self, windows: np.ndarray) -> np.ndarray:
        return np.asarray(self.ensemble.predict(windows)[0])


def ablation(
    name: str,
    series: list[tuple[pl.DataFrame, pl.DataFrame]],
    columns: Sequence[str],
    *,
    groups: Sequence[str] | None = None,
    folds: int = FOLDS,
    train_days: float = TRAIN_DAYS,
    test_days: float = TEST_DAYS,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """One dataset's ablation; its report saved as WORK/<name>.json."""
    import torch

    from pipelines.features.groups import GROUPS
    from trading.backtest import Candles
    from trading.feature_groups import feature_group_ablation
    from trading.model_walkforward import base_config, fold_windows

    torch.set_num_threads(1)
    config, loop = _config()
    started, cpu = time.perf_counter(), time.process_time()
    result: dict[str, Any] = {"name": name, "groups_asked": list(groups or GROUPS), **meta}
    timeframe = str(series[0][0]["timeframe"][0])
    try:
        samples = _samples(series, columns, config)
        result["samples"] = len(samples)
        ts = samples.ts.astype("datetime64[ms]").astype(np.int64)
        span = (ts.max() - ts.min()) / DAY_MS if ts.size else 0.0
        need = folds * test_days + train_days
        if span < need:
            raise ValueError(
                f"{len(samples)} samples over {span:.1f} days after the features' warm-up; "
                f"{folds} folds of {test_days:g} test days after {train_days:g} training days "
                f"need {need:g} days"
            )
        spans = [
            (ts[samples.symbol == s].min(), ts[samples.symbol == s].max())
            for s in set(samples.symbol)
        ]
        windows = fold_windows(
            int(max(a for a, _ in spans)),
            int(min(b for _, b in spans)),
            timeframe=timeframe,
            folds=folds,
            train_days=train_days,
            test_days=test_days,
            purge_bars=config.horizon_bars,
        )
        candles = {
            str(c["symbol"][0]): Candles.from_frame(c, str(c["symbol"][0]), str(c["timeframe"][0]))
            for c, _ in series
        }
        report = feature_group_ablation(
            samples,
            candles,
            folds=windows,
            fit=lambda train: _Fitted(train, config),
            config=base_config(loop),
            round_trip_cost=loop.costs.round_trip,
            horizon_bars=config.horizon_bars,
            groups=tuple(groups or GROUPS),
            importance_repeats=IMPORTANCE_REPEATS,
        )
        result.update(report)
    except ValueError as exc:  # too little data for a walk-forward: say so
        result["error"] = str(exc)
    result.update(
        wall_s=time.perf_counter() - started,
        cpu_s=time.process_time() - cpu,
        load=os.getloadavg(),
        folds_asked=f"{folds} folds of {test_days:g} test days after {train_days:g} training days",
    )
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / f"{name}.json").write_text(json.dumps(result, default=str, indent=1))
    return result


def real_pairs() -> dict[str, Any]:
    from pipelines.features import build_features, feature_columns

    series = []
    for symbol in ("ETH/BTC", "LTC/BTC"):
        path = SHARED / "candles" / f"{symbol.replace('/', '_')}-{TIMEFRAME}.feather"
        candles = _candle_file(path, symbol, TIMEFRAME)
        series.append((candles, build_features(candles)))
    return ablation(
        "real_pairs",
        series,
        feature_columns(),
        meta={"data": "real ETH/BTC and LTC/BTC 5m (2018-01-10..30), candles only"},
    )


def real_trades() -> dict[str, Any]:
    from pipelines.features import build_features, feature_columns
    from pipelines.features.groups import BOOK_AND_TRADES, CANDLES, columns_of

    candles = _candle_file(SHARED / "candles" / "XRP_ETH-5m.feather", "XRP/ETH", TIMEFRAME)
    raw = pl.read_ipc(SHARED / "candles" / "XRP_ETH-trades.feather")
    trades = raw.select(
        pl.col("timestamp").cast(pl.Datetime("ms", "UTC")).alias("ts"), "side", "amount"
    )
    groups = (CANDLES, BOOK_AND_TRADES)
    return ablation(
        "real_trades",
        [(candles, build_features(candles, trades=trades))],
        columns_of(groups, feature_columns()),
        groups=groups,
        folds=SHORT_FOLDS,
        train_days=SHORT_TRAIN_DAYS,
        test_days=SHORT_TEST_DAYS,
        meta={
            "data": f"real XRP/ETH 5m (2019-10-11..13) with its {raw.height:,} public trades",
        },
    )


def real_futures() -> dict[str, Any]:
    from pipelines.features import build_features, feature_columns
    from pipelines.features.groups import CANDLES, FUNDING, columns_of
    from pipelines.features.side import SideInputs

    base = SHARED / "futures"
    candles = _candle_file(base / "XRP_USDT_USDT-1h-futures.feather", "XRP/USDT:USDT", "1h")
    funding = pl.read_ipc(base / "XRP_USDT_USDT-8h-funding_rate.feather").select(
        pl.col("date").dt.convert_time_zone("UTC").dt.cast_time_unit("ms").alias("ts"),
        pl.col("open").alias("funding_rate"),
    )
    mark = pl.read_ipc(base / "XRP_USDT_USDT-1h-mark.feather").select(
        pl.col("date").dt.convert_time_zone("UTC").dt.cast_time_unit("ms").alias("ts"), "close"
    )
    features = build_features(candles, side=SideInputs(funding=funding, mark=mark))
    meta = {
        "data": f"real XRP/USDT:USDT perpetual, {candles.height} 1h candles "
        f"(2021-11-17..21), {funding.height} 8h funding rates, {mark.height} 1h mark candles",
    }
    groups = (CANDLES, FUNDING)
    return ablation(
        "real_futures",
        [(candles, features)],
        columns_of(groups, [*feature_columns()]),
        groups=groups,
        folds=2,
        train_days=2.0,
        test_days=0.5,
        meta=meta,
    )


def simulated() -> dict[str, Any]:
    from pipelines.features import feature_columns

    series, meta = _simulated()
    return ablation("simulated", series, feature_columns(), meta=meta)


# ---------------------------------------------------------------- the RESULTS section


def _f(v: Any, fmt: str = ".4f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def _ci(row: dict[str, Any], key: str, fmt: str = ".4f") -> str:
    return (
        f"{_f(row.get(key), fmt)} [{_f(row.get(key + '_ci_low'), fmt)}, "
        f"{_f(row.get(key + '_ci_high'), fmt)}]"
    )


HEADER = (
    "| group | data | inputs | IC with it [95 % CI] | IC difference vs without [95 % CI] "
    "| importance on test bars [95 % CI] | after-fee return (trades): edge / sign "
    "| after-fee difference, bps per bar: edge / sign [95 % CI] | verdict |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)
LABEL = {
    "candles": "candles only",
    "multi-timeframe": "+ multi-timeframe",
    "order book/trades": "+ order book/trades",
    "funding/basis": "+ funding/basis",
    "sentiment": "+ sentiment",
}
SHORT = {
    "real_pairs": "real ETH/BTC+LTC/BTC 5m",
    "real_trades": "real XRP/ETH 5m + trades",
    "real_futures": "real XRP/USDT:USDT 1h",
    "simulated": "simulated (2 symbols, 5m)",
}


def _rows(result: dict[str, Any]) -> list[str]:
    data = SHORT[result["name"]]
    if "error" in result:
        return [
            f"| {', '.join(LABEL[g] for g in result['groups_asked'])} | "
            f"{data} | – | not measurable: {result['error']} | | | | | |"
        ]
    rows = []
    for step in result["steps"]:
        label = LABEL[step["group"]]
        if not step["measurable"]:
            rows.append(f"| {label} | {data} | – | {step['reason']} | | | | | |")
            continue
        strat = step["strategies"]
        after = " / ".join(
            f"{_f(strat[s]['total_return'])} ({strat[s].get('trades', '?')})"
            for s in ("edge", "sign")
        )
        if step["versus"] is None:
            diff, fee_diff = "(reference)", "(reference)"
        else:
            diff = _ci(step, "ic_difference")
            d = step["after_fee_difference"]
            fee_diff = " / ".join(
                f"{_f(d[s]['bps_per_bar'], '+.3f')} [{_f(d[s]['ci_low'], '+.3f')}, "
                f"{_f(d[s]['ci_high'], '+.3f')}]"
                for s in ("edge", "sign")
            )
        rows.append(
            f"| {label} | {data} | {step['inputs']} | {_ci(step, 'ic')} | {diff} | "
            f"{_ci(step, 'importance')} | {after} | {fee_diff} | {_verdict(step)} |"
        )
    return rows


def _excludes_zero(lo: Any, hi: Any) -> int:
    """+1 when the CI is above zero, -1 below, 0 otherwise (or unknown)."""
    if lo is not None and math.isfinite(lo) and lo > 0:
        return 1
    if hi is not None and math.isfinite(hi) and hi < 0:
        return -1
    return 0


def _verdict(step: dict[str, Any]) -> str:
    if step["versus"] is None:
        edge = _excludes_zero(step["ic_ci_low"], step["ic_ci_high"])
        return "reference: IC above zero" if edge > 0 else "reference: no measurable IC"
    said = []
    ic = _excludes_zero(step["ic_difference_ci_low"], step["ic_difference_ci_high"])
    if ic:
        said.append("raises the IC" if ic > 0 else "lowers the IC")
    for name, d in step["after_fee_difference"].items():
        fee = _excludes_zero(d["ci_low"], d["ci_high"])
        if fee:
            said.append(f"{name}: {'better' if fee > 0 else 'worse'} after fees")
    return "; ".join(said) if said else "adds nothing measurable"


def _summary(results: list[dict[str, Any]]) -> list[str]:
    """Per group, one line: where it was measured and what it added there."""
    lines = []
    for group, label in LABEL.items():
        where = []
        for r in results:
            step = next((s for s in r.get("steps", []) if s["group"] == group), None)
            if step is None or not step["measurable"]:
                continue
            imp = _excludes_zero(step["importance_ci_low"], step["importance_ci_high"])
            used = (
                "the model uses it (importance CI above zero)"
                if imp > 0
                else "its importance CI includes zero"
            )
            verdict = _verdict(step)
            where.append(f"{SHORT[r['name']]}: {verdict}; {used}")
        lines.append(
            f"- **{label}**: "
            + ("; ".join(where) if where else "not measurable on any of these datasets")
            + "."
        )
    return lines


def _load(name: str) -> dict[str, Any] | None:
    path = WORK / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def record() -> None:
    results = [r for name in SHORT if (r := _load(name)) is not None]
    if not results:
        raise RuntimeError(f"no results under {WORK}: run the dataset steps first")
    table = "\n".join(row for r in results for row in _rows(r))
    runs = "\n".join(
        f"- **{SHORT[r['name']]}**: {r['data']}; {r['folds_asked']}"
        + (
            f"; {r['samples']:,} samples, {r['steps'][0].get('test_bars', 0):,} test bars"
            if "steps" in r
            else ""
        )
        + (f"; skipped folds: {r['skipped_folds']}" if r.get("skipped_folds") else "")
        + f"; {r['cpu_s']:.0f} CPU s ({r['wall_s']:.0f} s wall)."
        for r in results
    )
    holds = "; ".join(
        f"{SHORT[r['name']]}: return {_f(r['buy_and_hold']['total_return'])}"
        for r in results
        if "buy_and_hold" in r
    )
    load = max(r["load"][1] for r in results)
    cost = next((r["round_trip_cost_fraction"] for r in results if "steps" in r), math.nan)
    record_section(
        SECTION,
        f"""
`python -m benchmarks.bench_feature_groups` (`trading.feature_groups`): the groups added one
at a time (candles only, + multi-timeframe, + order book/trades, + funding/basis, +
sentiment), the ensemble retrained per fold on exactly the columns of the groups so far
(feature selection off: the groups themselves are compared; {EPOCHS} epochs, horizon
{HORIZON} bars), each step judged on the same test bars. Pooled over the folds' test bars
(EVALUATION.md); CIs are moving-block bootstraps (blocks of 10 x horizon bars, 1,000
resamples); the IC and after-fee differences are paired (both models on the same bars).

- **IC**: Spearman of `p_buy - p_sell` against the next-open tradeable return.
- **Importance**: the mean increase of the test bars' log-loss when the added group's
  columns are shuffled together across bars (for "candles only": all its inputs), out of
  sample.
- **After fees** (settings' costs: a round trip of {cost:.4f}): `edge` = long when the
  expected tradeable return (probabilities x the model's per-class validation returns)
  exceeds the round-trip cost, short below minus it where allowed, else flat; `sign` = the
  sign of `p_buy - p_sell`, always in the market. Both replayed per symbol by the vectorized
  engine as one equal-weight book; the serving loop's own gates (confidence, thresholds,
  protections) are not run here (at these costs the loop placed no trade in the walk-forwards
  above). Returns are totals over the test windows; differences are the mean per bar in bps.

{HEADER}
{table}

Buy and hold on the same bars: {holds}.

In plain words (a group "adds" only where a CI excludes zero):

{chr(10).join(_summary(results))}

Runs:

{runs}

Caveats: small test windows give wide CIs, and one run per dataset is one draw of the
training seed. The `sign` strategy pays a round trip at every flip: it loses at these costs
on every dataset, and its differences mostly say how often the sign flips. The simulated
source's order book and trades follow its price moves (the buy share of trades rises with
the minute's return), its funding and basis are smooth functions of time unrelated to
returns, and its headlines follow regime switches (a trend regime has a drift): what a group
adds there says what the model can find in the simulator, not in a market. Real order books
were never recorded, and the real trade and futures files are days long.

Shared 2-core machine; the 5-minute load average reached {load:.1f} during the runs (other
engineers' jobs). CPU seconds are each run's own process time.
""",
    )


STEPS = {
    "real_pairs": real_pairs,
    "real_trades": real_trades,
    "real_futures": real_futures,
    "simulated": simulated,
    "record": record,
}


def main(steps: list[str] | None = None) -> None:
    for step in steps or list(STEPS):
        started = time.perf_counter()
        STEPS[step]()
        print(f"{step}: {time.perf_counter() - started:.0f} s ({dt.datetime.now(dt.UTC):%H:%M})")


if __name__ == "__main__":
    main(sys.argv[1:])
