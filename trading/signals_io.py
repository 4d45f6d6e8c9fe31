"""External signal files: measure anyone's strategy with the same engines.

Format (Parquet or CSV): columns ``ts`` (candle time, UTC: tz-aware timestamp, ISO string with
an offset such as ``2018-01-10T05:00:00Z``, or integer epoch milliseconds), ``symbol`` (as in
the warehouse, e.g. ``ETH/BTC``), ``signal`` in {-1, 0, 1} (the position wanted), optional
``size`` in [0, 1] (fraction of the per-symbol exposure limit; default 1).

Alignment (no look-ahead): a signal stamped ``ts`` belongs to the candle open at or before
``ts``; it is acted on at the OPEN of the next candle. A candle without a signal row keeps the
last signal; before the first row the position is flat. Two rows for the same candle: the
later one wins. Bad input raises ``SignalFileError`` naming the row and column.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from trading.backtest import Candles, SignalSeries


class SignalFileError(ValueError):
    """A signal file is malformed; the message names the file, row and column."""


def read_signal_file(path: str | Path) -> pl.DataFrame:
    """Validated signals: columns symbol (str), ts_ms (int64), signal (int8), size (float64)."""
    p = Path(path)
    if not p.exists():
        raise SignalFileError(f"{p}: no such file")
    try:
        if p.suffix.lower() == ".parquet":
            raw = pl.read_parquet(p)
        elif p.suffix.lower() in (".csv", ".txt"):
            raw = pl.read_csv(p, infer_schema_length=0)  # all strings: we parse and report
        else:
            raise SignalFileError(f"{p}: unsupported file type {p.suffix!r} (use .parquet or .csv)")
    except SignalFileError:
        raise
    except Exception as exc:  # polars parse errors
        raise SignalFileError(f"{p}: cannot read: {exc}") from exc
    is_csv = p.suffix.lower() != ".parquet"

    def where(i: int) -> str:
        return f"{p.name} row {i}" + (f" (line {i + 2})" if is_csv else "")

    missing = [c for c in ("ts", "symbol", "signal") if c not in raw.columns]
    if missing:
        raise SignalFileError(f"{p.name}: missing column(s) {missing}; has {raw.columns}")
    extra = [c for c in raw.columns if c not in ("ts", "symbol", "signal", "size")]
    if extra:
        raise SignalFileError(f"{p.name}: unexpected column(s) {extra}")
    n = raw.height
    ts_ms = _parse_ts(raw["ts"], where)
    symbol = raw["symbol"].cast(pl.Utf8)
    for i, s in enumerate(symbol.to_list()):
        if s is None or not str(s).strip():
            raise SignalFileError(f"{where(i)}, column 'symbol': empty")
    signal = _parse_numbers(raw["signal"], "signal", where)
    for i, v in enumerate(signal):
        if v not in (-1.0, 0.0, 1.0):
            raise SignalFileError(
                f"{where(i)}, column 'signal': {raw['signal'][i]!r} not in {{-1, 0, 1}}"
            )
    if "size" in raw.columns:
        size = _parse_numbers(raw["size"], "size", where)
        bad = np.flatnonzero(~((size >= 0) & (size <= 1)))
        if bad.size:
            i = int(bad[0])
            raise SignalFileError(f"{where(i)}, column 'size': {raw['size'][i]!r} not in [0, 1]")
    else:
        size = np.ones(n)
    out = pl.DataFrame(
        {"symbol": symbol, "ts_ms": ts_ms, "signal": signal.astype(np.int8), "size": size}
    ).with_row_index("row")
    dup = out.filter(pl.struct("symbol", "ts_ms").is_duplicated())
    if dup.height:
        rows = dup["row"].to_list()[:2]
        raise SignalFileError(
            f"{where(rows[0])}: duplicate (symbol, ts) "
            f"{dup['symbol'][0]!r} ts_ms={dup['ts_ms'][0]} "
            f"also in row {rows[1]}"
        )
    return out.sort("symbol", "ts_ms")


def _parse_ts(col: pl.Series, where: Callable[[int], str]) -> np.ndarray:
    if isinstance(col.dtype, pl.Datetime):
        if col.dtype.time_zone is None:
            raise SignalFileError(
                f"{where(0)}, column 'ts': naive timestamps; store them in UTC with a time zone"
            )
        values = col.dt.epoch("ms")
    elif col.dtype.is_integer():
        values = col.cast(pl.Int64)
    else:
        text = col.cast(pl.Utf8)
        values_list: list[int | None] = []
        for i, s in enumerate(text.to_list()):
            if s is None:
                raise SignalFileError(f"{where(i)}, column 'ts': empty")
            s = s.strip()
            if s.lstrip("-").isdigit():
                values_list.append(int(s))
                continue
            try:
                parsed = pl.Series([s]).str.to_datetime(time_zone="UTC", time_unit="ms")
            except Exception as exc:
                raise SignalFileError(f"{where(i)}, column 'ts': cannot parse {s!r}") from exc
            if not (s.endswith("Z") or "+" in s[10:] or "-" in s[10:]):
                raise SignalFileError(
                    f"{where(i)}, column 'ts': {s!r} has no time zone "
                    "(write e.g. 2018-01-10T05:00:00Z)"
                )
            values_list.append(int(parsed.dt.epoch("ms")[0]))
        values = pl.Series(values_list, dtype=pl.Int64)
    arr = values.to_numpy()
    nulls = np.flatnonzero(values.is_null().to_numpy())
    if nulls.size:
        raise SignalFileError(f"{where(int(nulls[0]))}, column 'ts': empty")
    return arr.astype(np.int64)


def _parse_numbers(col: pl.Series, name: str, where: Callable[[int], str]) -> np.ndarray:
    values = col.cast(pl.Float64, strict=False)
    bad = np.flatnonzero(values.is_null().to_numpy() | ~np.isfinite(values.fill_null(0).to_numpy()))
    if bad.size:
        i = int(bad[0])
        raise SignalFileError(f"{where(i)}, column {name!r}: {col[i]!r} is not a number")
    return values.to_numpy().astype(np.float64)


def align_signals(signals: pl.DataFrame, candles: Candles) -> SignalSeries:
    """Per-candle target signal and size for ``candles.symbol`` (see the module docstring)."""
    mine = signals.filter(pl.col("symbol") == candles.symbol)
    if mine.height == 0:
        known = sorted(set(signals["symbol"].to_list()))
        raise SignalFileError(f"no signals for {candles.symbol}; the file has {known}")
    ts = mine["ts_ms"].to_numpy()
    bar = np.searchsorted(candles.ts_ms, ts, side="right") - 1  # candle open at or before ts
    keep = bar >= 0
    n = len(candles)
    sig = np.full(n, np.nan)
    size = np.full(n, np.nan)
    # sorted by ts, so for several rows in one candle the later assignment wins
    sig[bar[keep]] = mine["signal"].to_numpy()[keep]
    size[bar[keep]] = mine["size"].to_numpy()[keep]
    idx = np.where(np.isnan(sig), 0, np.arange(n))
    np.maximum.accumulate(idx, out=idx)
    sig_f, size_f = sig[idx], size[idx]
    return SignalSeries.of(
        np.where(np.isnan(sig_f), 0, sig_f).astype(np.int8),
        None,
        np.where(np.isnan(size_f), 1.0, size_f),
    )
