"""Volatility model (issue 17): EWMA and GARCH(1,1) against realized sigma, out of sample.

On each real candle file: the forecasters are fitted on the first half (``choose_forecaster``,
``trading.volatility``), then every forecaster, and the realized 20-bar baseline, forecasts the
per-bar sigma over the next ``h`` bars on the second half (after an ``h``-bar purge). Scored
against the realized variance by QLIKE (``log F + RV/F``) and the MSE of the log variance, with a
moving-block bootstrap CI (blocks of 10 h, 1,000 resamples) of the QLIKE difference from the
baseline. The winner is what stops, take-profit and sizing would use. Also the per-bar cost of
the online forecasts (the serving loop's) beside the baseline's, in the same process.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from benchmarks.results import record
from trading.backtest import load_candle_file
from trading.volatility import RealizedVol, VolatilityForecaster, choose_forecaster

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "candles"
FILES = ("ETH_BTC-5m", "LTC_BTC-5m", "UNITTEST_BTC-1m", "XRP_ETH-1m")
HORIZONS = (5, 20)


def _online_us_per_bar(f: VolatilityForecaster, close: np.ndarray, horizon: int) -> float:
    best = float("inf")
    for _ in range(3):
        online = f.online(horizon)
        t0 = time.perf_counter()
        for c in close:
            online.update(float(c))
        best = min(best, time.perf_counter() - t0)
    return best / close.size * 1e6


def _fmt(x: float) -> str:
    return "-" if not np.isfinite(x) else f"{x:+.4f}"


def main() -> None:
    import scipy.optimize  # noqa: F401  (imported before the first timed choice)

    rows = []
    costs = []
    worse_mse = []  # chosen on QLIKE, worse than the baseline on the MSE of log variance
    for name in FILES:
        close = load_candle_file(DATA / f"{name}.feather").close
        for h in HORIZONS:
            t0 = time.perf_counter()
            choice = choose_forecaster(close, horizon=h)
            choose_s = time.perf_counter() - t0
            for s in choice.scores:
                won = "**chosen**" if s.description == choice.forecaster.describe() else ""
                if won and s.mse_log_var_diff > 0:
                    worse_mse.append(f"{name} h={h} ({s.name}, {_fmt(s.mse_log_var_diff)})")
                ci = (
                    "-"
                    if s.name == "realized"
                    else f"[{_fmt(s.qlike_diff_ci_low)}, {_fmt(s.qlike_diff_ci_high)}]"
                )
                rows.append(
                    f"| {name} | {h} | {s.description} | {s.bars:,} | {s.qlike:.4f} | "
                    f"{_fmt(s.qlike_diff)} | {ci} | {s.mse_log_var:.4f} | "
                    f"{_fmt(s.mse_log_var_diff)} | {won} |"
                )
            if h == HORIZONS[0]:
                chosen_us = _online_us_per_bar(choice.forecaster, close, h)
                base_us = _online_us_per_bar(RealizedVol(20), close, h)
                costs.append(
                    f"| {name} | {close.size:,} | {choose_s:.2f} | {choice.name} | "
                    f"{chosen_us:.2f} | {base_us:.2f} | {chosen_us / base_us:.2f} |"
                )
    load = os.getloadavg()
    md = (
        """
Fitted on the first half of each real file, scored on the second half after an `h`-bar purge
(`trading.volatility.choose_forecaster`). QLIKE is `log F + RV/F` with `F = h sigma^2` and
`RV` the sum of the next `h` squared log returns (lower is better; differences equal those of
Patton's `RV/F - log(RV/F) - 1`). "vs realized" is the forecaster's mean loss minus the
realized 20-bar sigma's on the same bars; its CI is a moving-block bootstrap (blocks of 10 h
bars, 1,000 resamples, 2.5/97.5 %). A forecaster is **chosen** only when that CI is wholly
below zero, otherwise realized sigma is kept (the fallback).

| file | h | forecaster | bars | QLIKE | vs realized | 95 % CI | MSE log var | vs realized | |
| --- | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | --- |
"""
        + "\n".join(rows)
        + "\n\nChosen on QLIKE but worse than realized sigma on the MSE of log variance: "
        + (", ".join(worse_mse) or "none")
        + """. QLIKE decides (it ranks variance forecasts consistently under a noisy proxy;
the MSE of log variance penalizes under- and over-prediction alike and is shown beside it).

Cost: the choice (fit both, score three, bootstrap; scipy already imported) on the whole file,
and the online update
per bar (the serving loop's `SymbolState.push`, best of 3) of the chosen forecaster beside the
realized baseline's.

| file | bars | choice (s) | chosen at h=5 | online us/bar | realized us/bar | ratio |
| --- | ---: | ---: | --- | ---: | ---: | ---: |
"""
        + "\n".join(costs)
        + f"""

Load average during the run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min).
"""
    )
    print(md)
    record("Volatility model (issue 17)", md)


if __name__ == "__main__":
    main()
