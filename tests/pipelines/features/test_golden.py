"""Golden fingerprint of every feature on fixed slices of real data.

``FEATURE_SET_VERSION`` hashes the specification plus a hand-set ``ops_revision``
(``pipelines/features/spec.py``), so a change to how an operator computes (``ops.py``) does not
change the version by itself. This test pins the computed values: a compact fingerprint of
every feature column (null and non-finite counts, sum, sum of absolute values and a
position-weighted sum of the finite values, 12 significant digits) on

* ``ETH_BTC-5m.feather``, first 1,500 candles (complete 5m data; 15m and 1h joined), and
* ``XRP_ETH-1m.feather``, all 2,469 candles (1m with real gaps) with the real
  ``XRP_ETH-trades.feather`` and a deterministic synthetic order book every 37 s,

against ``golden_<FEATURE_SET_VERSION>.json`` next to this file.

If an operator's output changed on purpose, bump ``ops_revision`` in
``pipelines/features/spec.py`` (which changes ``FEATURE_SET_VERSION``) and regenerate::

    .venv/bin/python -m tests.pipelines.features.test_golden

which writes ``golden_<new version>.json`` and removes the stale golden files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from pipelines.features import FEATURE_SET_VERSION, build_features, feature_columns
from tests.support.features import load_candles, load_trades

GOLDEN_DIR = Path(__file__).resolve().parent
REGENERATE = ".venv/bin/python -m tests.pipelines.features.test_golden"
SIGNIFICANT_DIGITS = 12
# Rounding noise (polars' chunk-dependent last bits, summation order) is ~1e-13 relative;
# changing an operator moves these sums by far more.
RTOL = 1e-9


def golden_path(version: str = FEATURE_SET_VERSION) -> Path:
    return GOLDEN_DIR / f"golden_{version}.json"


def synthetic_order_book(candles: pl.DataFrame) -> pl.DataFrame:
    """A snapshot every 37 s, mid interpolated from closes, sizes from integer arithmetic
    (no random generator: the same on every platform and numpy version)."""
    ts = pl.datetime_range(candles["ts"][0], candles["ts"][-1], interval="37s", eager=True)
    mid = np.interp(
        ts.dt.epoch("ms").to_numpy(),
        candles["ts"].dt.epoch("ms").to_numpy(),
        candles["close"].to_numpy(),
    )
    k = np.arange(len(ts))[:, None]
    j = np.arange(7)[None, :]
    bid_sizes = 1.0 + (k * 7 + j * 3) % 11
    ask_sizes = 1.0 + (k * 5 + j * 2) % 13
    spread = 1.0 + k % 4  # 1..4 bps half-spread
    return pl.DataFrame(
        {
            "ts": ts,
            "bid_prices": pl.Series(np.column_stack([mid, mid]) * (1 - 1e-4 * spread)),
            "bid_sizes": pl.Series(bid_sizes),
            "ask_prices": pl.Series(np.column_stack([mid, mid]) * (1 + 1e-4 * spread)),
            "ask_sizes": pl.Series(ask_sizes),
        }
    ).with_columns(pl.exclude("ts").cast(pl.List(pl.Float64)))


def golden_features(candles_dir: Path) -> dict[str, pl.DataFrame]:
    """The feature frames the fingerprint is taken of, by slice name."""
    eth = load_candles(candles_dir / "ETH_BTC-5m.feather", "ETH/BTC", "5m").head(1_500)
    xrp = load_candles(candles_dir / "XRP_ETH-1m.feather", "XRP/ETH", "1m")
    trades = load_trades(candles_dir / "XRP_ETH-trades.feather")
    return {
        "ETH_BTC-5m[:1500]": build_features(eth),
        "XRP_ETH-1m+trades+book": build_features(
            xrp, order_book=synthetic_order_book(xrp), trades=trades
        ),
    }


def _round(x: float) -> float:
    return float(f"{x:.{SIGNIFICANT_DIGITS}g}")


def column_fingerprint(values: pl.Series) -> dict[str, Any]:
    x = values.cast(pl.Float64).to_numpy()  # nulls -> NaN
    n = len(x)
    nulls = values.null_count()
    finite = np.isfinite(x)
    weight = (np.arange(n) + 1.0) / n  # position-weighted: catches shifts and lags
    return {
        "nulls": nulls,
        "nonfinite": int(n - nulls - finite.sum()),
        "sum": _round(float(x[finite].sum())),
        "abssum": _round(float(np.abs(x[finite]).sum())),
        "wsum": _round(float((x[finite] * weight[finite]).sum())),
    }


def fingerprint(frames: dict[str, pl.DataFrame]) -> dict[str, Any]:
    return {
        "feature_set_version": FEATURE_SET_VERSION,
        "generated_by": REGENERATE,
        "slices": {
            name: {
                "rows": frame.height,
                "columns": {
                    col: column_fingerprint(frame.get_column(col))
                    for col in ("gap_bars", *feature_columns())
                },
            }
            for name, frame in frames.items()
        },
    }


def compare(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """Differences of ``got`` from ``want`` (counts exactly, sums to ``RTOL`` of abssum)."""
    problems = []
    for name, w in want["slices"].items():
        g = got["slices"].get(name)
        if g is None or g["rows"] != w["rows"]:
            problems.append(f"{name}: rows {g and g['rows']} != {w['rows']}")
            continue
        if list(g["columns"]) != list(w["columns"]):
            problems.append(f"{name}: columns differ from the golden file's")
            continue
        for col, wc in w["columns"].items():
            gc = g["columns"][col]
            scale = wc["abssum"]
            bad = [k for k in ("nulls", "nonfinite") if gc[k] != wc[k]]
            bad += [
                k
                for k in ("sum", "abssum", "wsum")
                if not math.isclose(gc[k], wc[k], rel_tol=RTOL, abs_tol=RTOL * scale)
            ]
            if bad:
                problems.append(
                    f"{name} {col}: " + ", ".join(f"{k} {gc[k]!r} != {wc[k]!r}" for k in bad)
                )
    return problems


def test_features_match_the_golden_fingerprint(candles_dir: Path) -> None:
    path = golden_path()
    if not path.exists():
        others = sorted(p.name for p in GOLDEN_DIR.glob("golden_*.json"))
        pytest.fail(
            f"no golden fingerprint for FEATURE_SET_VERSION {FEATURE_SET_VERSION} "
            f"(found: {others or 'none'}). The feature spec or ops_revision changed: check the "
            f"new values are intended, then regenerate with `{REGENERATE}`."
        )
    want = json.loads(path.read_text())
    assert want["feature_set_version"] == FEATURE_SET_VERSION, path
    problems = compare(fingerprint(golden_features(candles_dir)), want)
    assert not problems, (
        f"feature values changed while FEATURE_SET_VERSION stayed {FEATURE_SET_VERSION}, so "
        "stored features and trained models could not tell the old computation from the new. "
        "If an operator's output changed on purpose, bump ops_revision in "
        "pipelines/features/spec.py (changing FEATURE_SET_VERSION) and regenerate the golden "
        f"file with `{REGENERATE}`; otherwise this is a regression. "
        f"{len(problems)} difference(s):\n" + "\n".join(problems[:20])
    )


def dumps(data: dict[str, Any]) -> str:
    """JSON with one line per column (small diffs when a few columns change)."""
    lines = ["{"]
    for key in ("feature_set_version", "generated_by"):
        lines.append(f"  {json.dumps(key)}: {json.dumps(data[key])},")
    lines.append('  "slices": {')
    for i, (name, sl) in enumerate(data["slices"].items()):
        lines.append(f'    {json.dumps(name)}: {{"rows": {sl["rows"]}, "columns": {{')
        cols = list(sl["columns"].items())
        for j, (col, fp) in enumerate(cols):
            comma = "," if j < len(cols) - 1 else ""
            lines.append(f"      {json.dumps(col)}: {json.dumps(fp)}{comma}")
        lines.append("    }}" + ("," if i < len(data["slices"]) - 1 else ""))
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Write ``golden_<FEATURE_SET_VERSION>.json`` and remove golden files of other versions."""
    from tests.support.data import SHARED_CANDLES

    path = golden_path()
    data = fingerprint(golden_features(SHARED_CANDLES))
    path.write_text(dumps(data))
    for stale in GOLDEN_DIR.glob("golden_*.json"):
        if stale != path:
            stale.unlink()
            print(f"removed {stale}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
