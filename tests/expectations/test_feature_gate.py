"""The feature gate's polars evaluation of the feature suite == GX's (check_frame)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from expectations.feature_gate import check_features, gate_features
from expectations.frames import check_frame
from pipelines.features import build_features
from tests.support.features import load_candles
from warehouse import Settings

# row -> (column, value written there)
CORRUPTIONS: dict[int, tuple[str, object]] = {
    100: ("rsi_14", 150.0),  # out of range
    200: ("ema_12", float("inf")),  # not finite
    300: ("volratio_20", float("nan")),  # not finite (NaN is not null)
    400: ("obimb", -1.5),  # out of range in a column that is otherwise all null
    500: ("hour", 24.0),  # out of range
    600: ("rvol_10", -1e-9),  # out of range, barely
    700: ("symbol", None),  # a key is missing
    800: ("rsi_14_1h", -0.1),  # out of range on a higher timeframe
}


def _features(candles_dir: Path) -> pl.DataFrame:
    return build_features(load_candles(candles_dir / "ETH_BTC-5m.feather", "ETH/BTC", "5m"))


def _corrupted(features: pl.DataFrame) -> pl.DataFrame:
    """``features`` with CORRUPTIONS written in and row 900 appended again (a duplicated key)."""
    row = pl.int_range(pl.len())
    corrupt = features.with_columns(
        [
            pl.when(row == i).then(pl.lit(value, features.schema[col])).otherwise(col).alias(col)
            for i, (col, value) in CORRUPTIONS.items()
        ]
    )
    return pl.concat([corrupt, corrupt.slice(900, 1)])


def test_polars_evaluation_equals_great_expectations(candles_dir: Path, settings: Settings) -> None:
    features = _features(candles_dir)
    assert check_features(features).problems == ()
    corrupt = _corrupted(features)

    ours = check_features(corrupt)
    theirs = check_frame("features", corrupt, settings=settings)
    assert not theirs.success
    assert tuple(p.row for p in ours.problems) == theirs.bad_rows
    assert theirs.bad_rows == (*sorted(CORRUPTIONS), 900, corrupt.height - 1)
    # the same rules fail, on the same number of rows
    counted: dict[str, int] = {}
    for p in ours.problems:
        for rule in p.rules:
            counted[rule] = counted.get(rule, 0) + 1
    gx_rules: dict[str, int] = {}
    for line in theirs.failures:  # "<rule> on <columns>: <n> row(s); ..."
        rule, count = line.split(" on ")[0], int(line.split(": ")[1].split(" ")[0])
        gx_rules[rule] = gx_rules.get(rule, 0) + count
    assert counted == gx_rules
    # what the quarantine rows will say names the offending column and value
    by_row = {p.row: p for p in ours.problems}
    for i, (col, _) in CORRUPTIONS.items():
        assert col in by_row[i].columns, (i, by_row[i])
    assert "rsi_14=150.0" in by_row[100].reason and "ema_12=inf" in by_row[200].reason
    assert ours.passing.height == corrupt.height - len(ours.problems)
    assert ours.failing.height == len(ours.problems)


def test_failing_rows_are_quarantined_once_each_and_the_rest_written(
    candles_dir: Path,
    settings: Settings,
    lake,  # type: ignore[no-untyped-def]
) -> None:
    corrupt = _corrupted(_features(candles_dir))
    bad = len(CORRUPTIONS) + 2  # and both copies of the duplicated row (identical rows)
    for run in ("a", "b"):  # a second run writes nothing new
        written, quarantined = gate_features(lake, corrupt, settings=settings, run_id=run)
        assert quarantined == bad
    assert lake.execute("SELECT count(*) FROM features").fetchone() == (corrupt.height - bad,)
    rows = lake.execute(
        "SELECT expectation, column_name, reason FROM quarantine WHERE table_name = 'features'"
    ).fetchall()
    assert len(rows) == bad
    assert ("feature_range", "rsi_14") in {(r[0], r[1]) for r in rows}
    assert any("ema_12=inf" in r[2] for r in rows)
