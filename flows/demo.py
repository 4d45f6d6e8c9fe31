"""Flow `demo`: the whole loop on the embedded default (or on candle files), then a dashboard.

    pipeline (collect -> quality gate -> features -> retrain ensemble -> ONNX -> registry/promote
    -> serve N candles with paper trading and feedback)
    -> walk-forward of the model (retrained per fold, backtested as a strategy) -> dashboard

Runs offline: the simulated exchange is generated locally, Prefect runs a temporary local
server, the warehouse lives under ``settings.home``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows.orchestration import (
    create_link_artifact,
    create_table_artifact,
    flow,
    get_run_logger,
)
from flows.pipeline import pipeline
from models import retraining
from warehouse import Settings, connect, get_settings

DEMO_SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


@dataclass(frozen=True)
class DemoSummary:
    model_id: str | None
    promoted: bool
    accuracy: float | None
    accuracy_change: float | None  # vs the previous champion on the same window
    f1_macro: float | None
    baseline_accuracy: float | None  # always predicting the majority class, same window
    baseline_f1_macro: float | None
    confidence_mean: float | None
    train_samples: int
    trained_at: dt.datetime | None
    trend: list[tuple[str, float, float]]
    counts: dict[str, int]
    pnl_quote: float | None  # paper P&L of the serving run (None: serving did not run)
    decisions: dict[str, int]  # the serving run's signals per deciding rule
    report_html: Path | None
    walk_forward_ic: tuple[float, float, float] | None  # pooled IC and its CI
    walk_forward_verdict: str | None
    data_docs: Path | None
    warehouse_home: Path
    elapsed_s: float
    quality_report: Path | None = None  # the offline quality page of the pipeline's run
    account: str = ""  # the paper account the demo served on (`tradeloop dashboard --account`)


def walk_forward_report(
    settings: Settings,
    symbol: str,
    timeframe: str | None,
    epochs: int,
    max_train_seconds: float,
) -> dict[str, Any]:
    """``tradeloop walk-forward`` on the demo's data (two folds sized to what is stored): the
    ensemble retrained per fold and backtested as a strategy on the next window."""
    from flows.walk_forward import walk_forward
    from warehouse.inventory import inventory, resolve_series

    con = connect(settings, read_only=True)
    try:
        stored = inventory(con)
    finally:
        con.close()
    series = resolve_series(stored, [symbol], timeframe)
    held = next(s for s in stored if s.symbol == symbol and s.timeframe == series.timeframe)
    span_days = (held.last_ts_ms - held.first_ts_ms) / 86_400_000
    report: dict[str, Any] = walk_forward(
        symbols=[symbol],
        timeframe=series.timeframe,
        exchange=series.exchange,
        folds=2,
        train_days=span_days * 0.5,
        test_days=span_days * 0.2,
        epochs=min(epochs, 2),
        train_overrides={"max_train_seconds": max_train_seconds, "progress": False},
    )
    create_link_artifact(
        key="walk-forward-report",
        link=settings.report_link(Path(report["report_html"])),
        link_text=f"walk-forward of the model {symbol} {series.timeframe}",
    )
    get_run_logger().info(f"walk-forward: {report['pooled']['verdict']}")
    return report


def _paper_pnl(settings: Settings, account: str) -> float | None:
    """Equity change of the demo's paper account over the serving run, from `equity`."""
    con = connect(settings, read_only=True)
    try:
        row = con.execute(
            "SELECT arg_max(equity, ts) - arg_min(equity, ts), count(*) FROM equity "
            "WHERE account = ?",
            [account],
        ).fetchone()
    finally:
        con.close()
    if not row or not row[1]:
        return None
    return float(row[0])


def _decisions(settings: Settings, account: str) -> dict[str, int]:
    """How the serving run's bars were decided: signals per deciding rule (the reason up to its
    figures, numbers left out: "rsi 45.44 inside the band" is "rsi inside the band"), most
    frequent first, so a run without orders says why."""
    con = connect(settings, read_only=True)
    try:
        rows = con.execute(
            "SELECT regexp_replace(regexp_extract(reason, '^[^(;]*'), "
            "'\\s*-?[0-9]+(\\.[0-9]+)?', '', 'g') AS rule, count(*) AS n FROM signals "
            "WHERE account = ? GROUP BY 1 ORDER BY n DESC, rule",
            [account],
        ).fetchall()
    finally:
        con.close()
    return {str(rule).strip(): int(n) for rule, n in rows}


@flow(name="demo", log_prints=True)
def demo(
    data: str | None = None,
    symbols: list[str] | None = None,
    days: float = 3.0,
    epochs: int = 5,
    max_train_seconds: float = 45.0,
    serve_candles: int = 120,
) -> DemoSummary:
    """The whole loop; ``data`` = a folder of candle files instead of the simulated exchange."""
    settings = get_settings()
    started = dt.datetime.now(dt.UTC)
    result = pipeline(
        source="file" if data else "simulated",
        path=data,
        symbols=symbols if data else list(symbols or DEMO_SYMBOLS),
        timeframes=None if data else ["1m", "5m", "15m", "1h"],
        lookback_days=days,
        resample_from_1m=not data,
        build_docs=True,
        fail_on_quality=False,
        run_retrain=True,
        retrain_days=max(days, 1.0) if not data else None,
        epochs=epochs,
        train_overrides={"max_train_seconds": max_train_seconds, "progress": True},
        serve_candles=serve_candles,
        serve_account=None,  # the served series' own account: a demo on other data starts afresh
    )
    outcome: retraining.RetrainOutcome = result["retrain"]
    account = result["serve"]["account"] if result["serve"] else ""

    symbol = outcome_symbol(settings, data, symbols)
    try:
        wf: dict[str, Any] | None = walk_forward_report(
            settings, symbol, None if data else settings.base_timeframe, epochs, max_train_seconds
        )
    except ValueError as exc:  # too little data for two folds: the rest of the demo stands
        get_run_logger().warning(f"walk-forward not run: {exc}")
        wf = None
    prev = outcome.previous
    summary = DemoSummary(
        model_id=outcome.model_id,
        promoted=outcome.promoted,
        accuracy=outcome.challenger.get("accuracy"),
        accuracy_change=(outcome.challenger["accuracy"] - prev["accuracy"]) if prev else None,
        f1_macro=outcome.challenger.get("f1_macro"),
        baseline_accuracy=outcome.challenger.get("baseline_accuracy"),
        baseline_f1_macro=outcome.challenger.get("baseline_f1_macro"),
        confidence_mean=outcome.challenger.get("confidence_mean"),
        train_samples=outcome.train_samples,
        trained_at=outcome.trained_at,
        trend=retraining.trend(settings, "signal"),
        counts=dict(result["counts"]),
        pnl_quote=_paper_pnl(settings, account) if serve_candles > 0 else None,
        decisions=_decisions(settings, account) if serve_candles > 0 else {},
        report_html=Path(wf["report_html"]) if wf else None,
        walk_forward_ic=(
            (wf["pooled"]["ic"], wf["pooled"]["ic_ci_low"], wf["pooled"]["ic_ci_high"])
            if wf
            else None
        ),
        walk_forward_verdict=wf["pooled"]["verdict"] if wf else None,
        data_docs=result["quality"].get("data_docs"),
        warehouse_home=settings.home.resolve(),
        elapsed_s=(dt.datetime.now(dt.UTC) - started).total_seconds(),
        quality_report=result["quality"].get("report"),
        account=account,
    )
    create_table_artifact(
        key="demo-summary",
        table=summary_rows(summary),
        description="the demo's figures (the dashboard's)",
    )
    return summary


def orders_verdict(summary: DemoSummary) -> str:
    """Why the served bars placed no order, in the dashboard's words: the most common deciding
    rule, and that a model trades only where its expected edge clears the costs and its gates
    (the demo's simulated market may give it none: the Walk-forward row says)."""
    top_rule, top_bars = max(summary.decisions.items(), key=lambda kv: kv[1])
    served = sum(summary.decisions.values())
    text = (
        f"none in {served} served bars (most decided by {top_rule}: {top_bars}); the model "
        "orders only where its expected edge clears costs and its gates"
    )
    return text + (" (see Walk-forward)" if summary.walk_forward_ic is not None else "")


def summary_rows(summary: DemoSummary) -> list[dict[str, str]]:
    """The demo's figures as rows (figure, value) for the ``demo-summary`` table artifact."""

    def num(v: float | None, spec: str) -> str:
        return "\u2014" if v is None else format(v, spec)

    rows = [
        ("model", f"{summary.model_id} ({'champion' if summary.promoted else 'challenger'})"),
        ("accuracy", num(summary.accuracy, ".3f")),
        ("accuracy change vs previous champion", num(summary.accuracy_change, "+.3f")),
        ("F1 (macro)", num(summary.f1_macro, ".3f")),
        ("majority-class accuracy (same window)", num(summary.baseline_accuracy, ".3f")),
        ("majority-class F1 (macro)", num(summary.baseline_f1_macro, ".3f")),
        ("mean confidence", num(summary.confidence_mean, ".3f")),
        ("training samples", str(summary.train_samples)),
        ("paper P&L (quote)", num(summary.pnl_quote, "+.2f")),
        ("served bars", str(sum(summary.decisions.values()))),
    ]
    if summary.walk_forward_ic is not None:
        ic, lo, hi = summary.walk_forward_ic
        rows.append(("walk-forward IC [95 % CI]", f"{ic:.3f} [{lo:.3f}, {hi:.3f}]"))
    rows += [(f"{table} rows", str(n)) for table, n in summary.counts.items()]
    rows.append(("elapsed (s)", f"{summary.elapsed_s:.0f}"))
    return [{"figure": k, "value": v} for k, v in rows]


def outcome_symbol(settings: Settings, data: str | None, symbols: list[str] | None) -> str:
    """The series the walk-forward report is about: the first symbol with base candles."""
    if symbols:
        return symbols[0]
    if not data:
        return DEMO_SYMBOLS[0]
    con = connect(settings, read_only=True)
    try:
        row = con.execute(
            "SELECT symbol FROM candles WHERE timeframe = ? GROUP BY 1 ORDER BY count(*) DESC",
            [settings.base_timeframe],
        ).fetchone()
    finally:
        con.close()
    if row is None:
        raise LookupError(f"no {settings.base_timeframe} candles in {data}")
    return str(row[0])


def dashboard(summary: DemoSummary) -> Any:
    """The closing box (a rich Panel)."""
    from rich.panel import Panel
    from rich.table import Table

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1%}"

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    change = (
        "first model: no previous champion"
        if summary.accuracy_change is None
        else f"{summary.accuracy_change:+.1%} vs previous champion"
    )
    spark = retraining.sparkline([t[1] for t in summary.trend])
    grid.add_row(
        "Model", f"{summary.model_id} ({'champion' if summary.promoted else 'challenger'})"
    )
    grid.add_row("Accuracy", f"{pct(summary.accuracy)}  ({change})")
    grid.add_row("F1 (macro)", "n/a" if summary.f1_macro is None else f"{summary.f1_macro:.3f}")
    baseline_f1 = summary.baseline_f1_macro
    grid.add_row(
        "Baseline",
        f"majority class: accuracy {pct(summary.baseline_accuracy)}, F1 (macro) "
        + ("n/a" if baseline_f1 is None else f"{baseline_f1:.3f}")
        + " (same out-of-sample window)",
    )
    grid.add_row("Confidence", pct(summary.confidence_mean))
    grid.add_row("Training samples", f"{summary.train_samples:,}")
    grid.add_row(
        "Last training",
        f"{summary.trained_at:%Y-%m-%d %H:%M:%S} UTC" if summary.trained_at else "n/a",
    )
    grid.add_row("Trend", f"{spark} " + " ".join(f"{t[1]:.1%}" for t in summary.trend))
    grid.add_row(
        "Live P&L (paper)",
        "serving not run"
        if summary.pnl_quote is None
        else f"{summary.pnl_quote:+,.2f} quote (account {summary.account})",
    )
    if summary.decisions:
        grid.add_row(
            "Decisions",
            f"{sum(summary.decisions.values())} bars: "
            + ", ".join(f"{rule} {n}" for rule, n in summary.decisions.items()),
        )
    if summary.decisions and not summary.counts.get("orders"):
        grid.add_row("Orders", orders_verdict(summary))
    grid.add_row("Warehouse rows", ", ".join(f"{k} {v:,}" for k, v in summary.counts.items()))
    if summary.walk_forward_ic is not None:
        ic, lo, hi = summary.walk_forward_ic
        grid.add_row(
            "Walk-forward",
            f"IC {ic:.3f} [{lo:.3f}, {hi:.3f}] out of sample; {summary.walk_forward_verdict}",
        )
    grid.add_row("Walk-forward report", str(summary.report_html or "not run (too little data)"))
    if summary.quality_report is not None:
        grid.add_row("Quality report", str(summary.quality_report))
    grid.add_row("Data Docs", str(summary.data_docs))
    grid.add_row(
        "Query the warehouse",
        f"TRADELOOP_HOME={summary.warehouse_home} tradeloop sql "
        '"SELECT symbol, timeframe, count(*) FROM candles GROUP BY ALL"',
    )
    return Panel(grid, title=f"tradeloop demo ({summary.elapsed_s:.0f} s)", expand=False)
