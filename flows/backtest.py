"""Flow `backtest`: a signal file on warehouse candles -> report, published as Prefect artifacts.

Each backtest flow publishes its figures, not only a link: a table artifact (every figure of
the strategy beside each baseline, as the report's first table), a markdown artifact with the
headline figures, and a link to the HTML report (``Settings.report_link``: under
``TRADELOOP_REPORTS_URL`` when it is set, since a browser blocks file:// links from the UI).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from flows.orchestration import (
    NO_CACHE,
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
    flow,
    get_run_logger,
    task,
)
from trading.backtest import BacktestConfig, Candles
from trading.evaluation import load_warehouse_candles, signal_backtest
from warehouse import Settings, connect, get_settings


@task(name="load-candles", cache_policy=NO_CACHE)
def load_candles_task(
    settings: Settings, symbol: str, timeframe: str, exchange: str | None
) -> Candles:
    con = connect(settings, read_only=True)
    try:
        return load_warehouse_candles(con, symbol, timeframe, exchange)
    finally:
        con.close()


@task(name="run-backtest", cache_policy=NO_CACHE)
def backtest_task(
    candles: Candles,
    signals_path: str,
    config: BacktestConfig,
    reports_dir: Path,
    n_trials: int,
    exchange: str | None = None,
) -> dict[str, Any]:
    return signal_backtest(
        candles, signals_path, config, n_trials=n_trials, reports_dir=reports_dir, exchange=exchange
    )


HEADLINE_ROWS = ("total_return", "sharpe", "max_drawdown", "trades", "win_rate", "fees_paid")


def _cell(value: Any) -> Any:
    """A figure as an artifact shows it: 6 significant digits, a dash when undefined."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "\u2014"
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else str(value)
    return value


def figure_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The table artifact's rows: the report's figures, the strategy beside each baseline
    (annualized figures left out under 30 days, as in the report)."""
    from trading.report import metric_rows

    return [{k: _cell(v) for k, v in row.items()} for row in metric_rows(summary)]


def headline_markdown(summary: dict[str, Any], title: str, link: str) -> str:
    """The headline figures of a backtest as a markdown table, and where its report is."""
    rows = [r for r in figure_rows(summary) if r["figure"].split(" ")[0] in HEADLINE_ROWS]
    cols = list(rows[0]) if rows else ["figure"]
    lines = [
        f"# {title}",
        "",
        f"{_cell(summary.get('bars'))} bars; fee {_cell(summary.get('fee_fraction'))} and "
        f"slippage {_cell(summary.get('slippage_fraction'))} per side; Sharpe "
        f"{summary.get('sharpe_units', 'annualized')}.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
        *("| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows),
        "",
        f"Report: {link}",
    ]
    return "\n".join(lines) + "\n"


@flow(name="backtest", log_prints=True)
def backtest(
    signals_path: str,
    symbol: str,
    timeframe: str = "1m",
    exchange: str | None = None,
    config: BacktestConfig | None = None,
    n_trials: int = 1,
) -> dict[str, Any]:
    """Backtest ``signals_path`` for ``symbol`` and publish the figures and the report."""
    settings = get_settings()
    candles = load_candles_task(settings, symbol, timeframe, exchange)
    summary = backtest_task(
        candles,
        signals_path,
        config or BacktestConfig(),
        settings.home / "reports",
        n_trials,
        exchange,
    )
    html = Path(summary["report_html"]).resolve()
    link = settings.report_link(html)
    series = report_series(summary)
    create_link_artifact(key="backtest-report", link=link, link_text=f"backtest report {series}")
    create_table_artifact(
        key="backtest-figures",
        table=figure_rows(summary),
        description=f"backtest of {summary['strategy']} on {series}: strategy and baselines",
    )
    create_markdown_artifact(
        key="backtest-summary",
        markdown=headline_markdown(summary, f"Backtest {summary['strategy']} on {series}", link),
    )
    get_run_logger().info(f"backtest {symbol}: return {summary['total_return']:.4f}, report {html}")
    return summary


def report_series(summary: dict[str, Any]) -> str:
    from trading.report import series_name

    return series_name(summary)


@task(name="walk-forward", cache_policy=NO_CACHE)
def walk_forward_task(samples: Any, config: Any, n_folds: int) -> Any:
    """Retrains with the models package's real training code (``models.training``) per fold;
    torch is imported here, in orchestration, never in ``trading/``."""
    import numpy as np

    from models.training import fit_predict
    from trading.walkforward import walk_forward_rows

    def fit(train_rows: np.ndarray, test_rows: np.ndarray) -> np.ndarray:
        return fit_predict(samples.take(train_rows), samples.take(test_rows), config)

    return walk_forward_rows(
        samples.ts, samples.labels, fit, n_folds=n_folds, horizon_bars=config.horizon_bars
    )


def publish_fold_metrics(result: Any) -> None:
    """The ``walk-forward-folds`` artifact: one row per fold of a walk-forward result."""
    create_markdown_artifact(
        key="walk-forward-folds",
        markdown="# Walk-forward folds\n\n| fold | train rows | test rows | accuracy | f1 |\n"
        "|---|---|---|---|---|\n"
        + "".join(
            f"| {m['fold']} | {m['train_rows']} | {m['test_rows']} | "
            f"{m['accuracy']:.3f} | {m['f1_macro']:.3f} |\n"
            for m in result.fold_metrics
        ),
    )


@flow(name="walk-forward")
def walk_forward(samples: Any, config: Any, n_folds: int = 3) -> Any:
    """Walk-forward retraining of the signal ensemble on one symbol's samples."""
    result: Any = walk_forward_task(samples, config, n_folds)
    publish_fold_metrics(result)
    return result


@task(name="run-model-backtest", cache_policy=NO_CACHE)
def model_backtest_task(
    settings: Settings,
    model: str,
    symbol: str,
    timeframe: str,
    exchange: str,
    start_ms: int | None,
    end_ms: int | None,
    config: Any,
    n_trials: int,
    reports_dir: Path | None,
) -> dict[str, Any]:
    """``trading.model_backtest.model_backtest`` on a read-only warehouse connection."""
    from trading.model_backtest import model_backtest

    con = connect(settings, read_only=True)
    try:
        return model_backtest(
            con,
            symbol=symbol,
            timeframe=timeframe,
            exchange=exchange,
            model=model,
            start_ms=start_ms,
            end_ms=end_ms,
            config=config,
            n_trials=n_trials,
            reports_dir=reports_dir,
        )
    finally:
        con.close()


def _md(value: Any) -> str:
    """A markdown cell: the figure as Python prints it, a dash when undefined."""
    return "\u2014" if value is None else str(value)


MODEL_SUMMARY_ROWS = (
    "ic",
    "ic_ci_low",
    "ic_ci_high",
    "log_loss",
    "ece",
    "total_return",
    "sharpe",
    "max_drawdown",
    "trades",
    "model_trades",
    "fallback_trades",
)


@flow(name="backtest-model", log_prints=True)
def backtest_model(
    symbol: str,
    timeframe: str,
    exchange: str,
    model: str = "champion",
    start_ms: int | None = None,
    end_ms: int | None = None,
    config: Any = None,
    n_trials: int = 1,
) -> dict[str, Any]:
    """``tradeloop backtest --model`` as a flow: the registered ``model`` through the serving
    loop's decisions on the stored candles; the figures and the report as artifacts."""
    settings = get_settings()
    summary = model_backtest_task(
        settings,
        model,
        symbol,
        timeframe,
        exchange,
        start_ms,
        end_ms,
        config,
        n_trials,
        settings.home / "reports",
    )
    html = Path(summary["report_html"]).resolve()
    link = settings.report_link(html)
    create_link_artifact(
        key="backtest-model-report",
        link=link,
        link_text=f"model {summary['model_id']} on {report_series(summary)}",
    )
    create_table_artifact(
        key="backtest-model-figures",
        table=figure_rows(summary),
        description=f"model {summary['model_id']} on {report_series(summary)}: the serving "
        "loop's decisions beside the baselines",
    )
    hold = summary["baselines"]["buy_and_hold"]
    create_markdown_artifact(
        key="backtest-model-summary",
        markdown=(
            f"# Model {summary['model_id']} on {symbol} {timeframe}\n\n"
            "| measure | model | buy and hold |\n|---|---|---|\n"
            + "".join(
                f"| {k} | {_md(summary.get(k))} | {_md(hold.get(k)) if k in hold else ''} |\n"
                for k in MODEL_SUMMARY_ROWS
            )
            + f"\nReport: {link}\n"
        ),
    )
    get_run_logger().info(
        f"model {summary['model_id']} on {symbol}: IC {summary['ic']}, "
        f"return {summary['total_return']:.4f}, report {html}"
    )
    return summary
