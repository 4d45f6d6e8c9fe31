"""Flow `walk-forward`: the real ensemble retrained per purged fold and backtested on the next
window through the serving decision path (``trading.model_walkforward``); the report (HTML +
JSON) under ``reports/walk-forward-*`` and the pooled figures as a markdown artifact.

``tradeloop walk-forward`` runs this flow (directly without a Prefect API), as do the
``walk-forward/model`` deployment and the demo."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import polars as pl

from flows.orchestration import NO_CACHE, create_markdown_artifact, flow, get_run_logger, task
from trading.model_walkforward import FoldWindow, fold_windows, walk_forward_model
from warehouse import connect, get_settings, read_candles
from warehouse.inventory import inventory, resolve_series


@task(name="train-fold", cache_policy=NO_CACHE)
def train_fold(frame: pl.DataFrame, config: Any, directory: Path, model_id: str) -> Any:
    """torch is imported here, in orchestration, never in ``trading/``."""
    from models.walk_forward import train_window

    return train_window(frame, config, directory, model_id)


def pooled_markdown(report: dict[str, Any]) -> str:
    p = report["pooled"]
    lines = [
        f"# Walk-forward {', '.join(report['symbols'])} {report['timeframe']}",
        "",
        f"{len(report['folds'])} folds; {p['verdict']}.",
        "",
        "| measure | value |",
        "|---|---|",
        *(f"| {k} | {p[k]:.4f} |" for k in ("ic", "ic_ci_low", "ic_ci_high", "ece", "log_loss")),
        "",
        "| strategy | total return | Sharpe | Sharpe CI | Sharpe units | max drawdown |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("strategy", "buy_and_hold", "rsi_rule", "flat", "majority_class"):
        if name in p:
            s = p[name]
            lines.append(
                f"| {'model' if name == 'strategy' else name} | {s['total_return']:.4f} | "
                f"{s['sharpe']:.3f} | {s['sharpe_ci_low']:.3f} .. {s['sharpe_ci_high']:.3f} | "
                f"{s['sharpe_units']} | {s['max_drawdown']:.4f} |"
            )
    lines += regime_markdown(report)
    return "\n".join(lines) + "\n"


def regime_markdown(report: dict[str, Any]) -> list[str]:
    """The per-regime rows and the regime rules of the report, as markdown lines."""
    lines: list[str] = []
    if report.get("regimes"):
        lines += [
            "",
            "| regime | bars | share | trades | hit rate | return | buy and hold | IC |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in report["regimes"]:
            lines.append(
                f"| {r['regime']} | {r['bars']} | {r['share']:.3f} | {r['trades']} | "
                f"{r['hit_rate']:.3f} | {r['return']:.4f} | {r['buy_and_hold_return']:.4f} | "
                f"{r['ic']:.3f} |"
            )
    if report.get("regime_rules"):
        lines += [
            "",
            "| signals | regime rule | total return | Sharpe | vs none, bps/bar (CI) | verdict |",
            "|---|---|---|---|---|---|",
        ]
        for r in report["regime_rules"]:
            lines.append(
                f"| {r['signals']} | {r['rule']} | {r['total_return']:.4f} | {r['sharpe']:.3f} | "
                f"{r['vs_none_bps_per_bar']:.3f} ({r['vs_none_ci_low']:.3f} .. "
                f"{r['vs_none_ci_high']:.3f}) | {r['verdict']} |"
            )
    return lines


@flow(name="walk-forward-model", log_prints=True)
def walk_forward(
    symbols: list[str] | None = None,
    timeframe: str | None = None,
    exchange: str | None = None,
    folds: int = 3,
    train_days: float = 10.0,
    test_days: float = 3.0,
    epochs: int = 5,
    horizon: int = 5,
    fee: float | None = None,
    slippage: float | None = None,
    max_samples: int | None = None,
    train_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Walk-forward evaluation of the ensemble as a strategy (``trading.model_walkforward``)."""
    from models.training import TrainConfig
    from trading.domain import FeeModel
    from trading.loop import LoopConfig

    logger = get_run_logger()
    settings = get_settings()
    con = connect(settings, read_only=True)
    try:
        stored = inventory(con)
        series = resolve_series(stored, symbols, timeframe, exchange)
        held = [
            s
            for s in stored
            if s.symbol in series.symbols
            and s.timeframe == series.timeframe
            and s.exchange == series.exchange
        ]
        windows: list[FoldWindow] = fold_windows(
            max(s.first_ts_ms for s in held),
            min(s.last_ts_ms for s in held),
            timeframe=series.timeframe,
            folds=folds,
            train_days=train_days,
            test_days=test_days,
            purge_bars=horizon,
        )
        frame = pl.from_arrow(
            read_candles(
                con,
                symbols=list(series.symbols),
                timeframe=series.timeframe,
                exchange=series.exchange,
            )
        )
        assert isinstance(frame, pl.DataFrame)
        loop = LoopConfig.from_settings(settings, exchange=series.exchange)
        if fee is not None:
            loop = dataclasses.replace(loop, fees=FeeModel(fee, fee))
        if slippage is not None:
            loop = dataclasses.replace(loop, slippage_fraction=slippage)
        # the labels know the same costs the decisions pay (a class move covers a round trip)
        config = TrainConfig(
            **{
                "epochs": epochs,
                "horizon_bars": horizon,
                "max_samples": max_samples,
                "round_trip_cost_fraction": loop.costs.round_trip,
                **(train_overrides or {}),
            }
        )
        run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        directory = settings.home / "models" / "walk-forward" / run_id

        def train(fold: FoldWindow) -> Any:
            logger.info(f"training {fold.describe()}")
            utc = dt.UTC
            part = frame.filter(
                (pl.col("ts") >= dt.datetime.fromtimestamp(fold.train_start_ms / 1000, utc))
                & (pl.col("ts") < dt.datetime.fromtimestamp(fold.train_end_ms / 1000, utc))
            )
            return train_fold(part, config, directory, f"wf-{run_id}-fold{fold.number}")

        def done(fold: FoldWindow, result: dict[str, Any]) -> None:
            if "skipped" in result:
                logger.warning(f"fold {fold.number} skipped: {result['skipped']}")
            for row in result["rows"]:
                logger.info(
                    f"fold {fold.number} {row['symbol']}: IC {row['ic']:.3f} "
                    f"[{row['ic_ci_low']:.3f}, {row['ic_ci_high']:.3f}], return "
                    f"{row['total_return']:.4f} (buy and hold {row['buy_and_hold_return']:.4f}), "
                    f"{row['trades']} trades ({row['model_trades']} by the model)"
                )

        report = walk_forward_model(
            con,
            symbols=series.symbols,
            timeframe=series.timeframe,
            exchange=series.exchange,
            folds=windows,
            train=train,
            config=loop,
            on_fold=done,
        )
    finally:
        con.close()
    from trading.model_walkforward import write_walk_forward_report

    name = f"walk-forward-{'_'.join(s.replace('/', '_') for s in series.symbols)}"
    html_path, json_path = write_walk_forward_report(
        report, settings.home / "reports" / f"{name}-{series.timeframe}"
    )
    report["report_html"], report["report_json"] = str(html_path), str(json_path)
    create_markdown_artifact(key="walk-forward-model", markdown=pooled_markdown(report))
    return report
