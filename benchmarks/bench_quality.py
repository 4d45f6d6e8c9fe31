"""Quality gate cost per 10k-row candle batch after warm-up, against a plain upsert.

Batches are 10,000 real 1m candles (../shared/data/candles/UNITTEST_BTC-1m.feather), each
under a fresh symbol so every write inserts 10,000 new rows. Measured in one process:
the first gate call (GX import and context build), warm gate calls on clean batches and on
batches with 1 % bad rows, re-validating an already stored batch (nothing to write), and the
baseline ``warehouse.upsert`` of the same batches; plus the split of a warm gate call into
coercion + derived rules (polars) and the GX checkpoint run.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.feather as feather

from benchmarks.results import record

DATA = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "candles" / "UNITTEST_BTC-1m.feather"
)
ROWS = 10_000
REPEATS = 5


def _batch(symbol: str, bad_every: int | None = None) -> pa.Table:
    raw = feather.read_table(DATA).slice(0, ROWS)
    table = pa.table(
        {
            "exchange": pa.array(["binance"] * ROWS),
            "symbol": pa.array([symbol] * ROWS),
            "timeframe": pa.array(["1m"] * ROWS),
            "ts": raw["date"].cast(pa.timestamp("ms", tz="UTC")),
            **{c: raw[c] for c in ("open", "high", "low", "close", "volume")},
        }
    )
    if bad_every:
        low = table["low"].to_pylist()
        for i in range(0, ROWS, bad_every):
            low[i] = -1.0
        table = table.set_column(table.schema.get_field_index("low"), "low", pa.array(low))
    return table


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    from expectations.gate import GatePolicy, gate_and_merge
    from warehouse import Settings, connect, migrate, upsert

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp) / "home")
        con = connect(settings)
        migrate(con)
        policy = GatePolicy(max_bad_fraction=0.05)

        first_s = _timed(
            lambda: gate_and_merge(con, "candles", _batch("WARM/0"), settings=settings)
        )
        batches = {
            k: [_batch(f"{k}/{i}", 100 if k == "BAD" else None) for i in range(REPEATS)]
            for k in ("GATE", "BAD", "BASE")
        }
        gate_s = [
            _timed(lambda b=b: gate_and_merge(con, "candles", b, settings=settings, policy=policy))
            for b in batches["GATE"]
        ]
        bad_s = [
            _timed(lambda b=b: gate_and_merge(con, "candles", b, settings=settings, policy=policy))
            for b in batches["BAD"]
        ]
        base_s = [
            _timed(lambda b=b: upsert(con, "candles", b, settings=settings))
            for b in batches["BASE"]
        ]
        again_gate = [
            _timed(lambda b=b: gate_and_merge(con, "candles", b, settings=settings, policy=policy))
            for b in batches["GATE"]
        ]
        again_base = [
            _timed(lambda b=b: upsert(con, "candles", b, settings=settings))
            for b in batches["BASE"]
        ]

        # split of one warm gate call (without the writes)
        from expectations import engine
        from expectations.coerce import coerce
        from expectations.derive import derive_candles
        from expectations.specs import CANDLES, suite_for

        now_ms = int(time.time() * 1000)
        definitions = suite_for("candles", policy)
        polars_s, gx_s = [], []
        for b in batches["GATE"]:
            started = time.perf_counter()
            frame, _, _ = derive_candles(coerce(CANDLES, b).frame, CANDLES, policy, now_ms)
            columns = sorted({c for d in definitions for c in d.gx_columns})
            pdf = frame.select(columns).to_pandas()
            polars_s.append(time.perf_counter() - started)
            gx_s.append(
                _timed(
                    lambda pdf=pdf: engine.validate(
                        settings, "candles@bench", definitions, pdf, run_name="bench"
                    )
                )
            )
        stored = con.execute("SELECT count(*) FROM candles").fetchone()
        con.close()

    med = statistics.median
    assert stored == (ROWS * (1 + 3 * REPEATS) - ROWS * REPEATS // 100,), stored
    ratio = f"{first_s / med(base_s):.1f}x"
    table = [
        "| step (10,000-row candle batch) | median s | vs plain upsert |",
        "| --- | ---: | ---: |",
        f"| first gate call (imports GX, builds the context) | {first_s:.2f} | {ratio} |",
        f"| plain `warehouse.upsert`, new rows (baseline) | {med(base_s):.3f} | 1.0x |",
        f"| gate, clean batch, new rows | {med(gate_s):.3f} | {med(gate_s) / med(base_s):.1f}x |",
        f"| gate, 1 % bad rows (100 quarantined) | {med(bad_s):.3f} | "
        f"{med(bad_s) / med(base_s):.1f}x |",
        f"| plain upsert, rows already stored (baseline) | {med(again_base):.3f} | 1.0x |",
        f"| gate, rows already stored (re-validation) | {med(again_gate):.3f} | "
        f"{med(again_gate) / med(again_base):.1f}x |",
        f"| of a gate call: coercion + derived rules (polars) + to pandas | "
        f"{med(polars_s):.3f} | |",
        f"| of a gate call: GX checkpoint run ({len(definitions)} expectations, COMPLETE) | "
        f"{med(gx_s):.3f} | |",
    ]
    text = (
        f"{REPEATS} batches per row, median seconds; real 1m candles, "
        "each batch under a new symbol. "
        f"Gate overhead over the plain upsert on a clean batch: "
        f"{med(gate_s) - med(base_s):.3f} s per 10k rows.\n\n" + "\n".join(table)
    )
    print(text)
    record("Quality gate (issue 5)", text)


if __name__ == "__main__":
    main()
