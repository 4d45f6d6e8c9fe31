"""Training data for the signal models: candles from the warehouse (at a DuckLake snapshot),
features, labels and model input windows. No torch here.

``load_candles`` reads the candles of the last ``days`` days (ending at the newest candle of the
requested symbols) AS OF one DuckLake snapshot and returns that snapshot id; reading again with
the same id returns the same rows, whatever was written since (DuckLake time travel:
``SELECT ... FROM candles AT (VERSION => id)``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import duckdb
import numpy as np
import polars as pl

from models.microstructure import SeriesInputs, read_microstructure, series_inputs
from models.side_data import read_side_data
from pipelines.features.side import SideInputs
from pipelines.labels import LabelConfig, make_labels, make_windows, time_splits
from warehouse.readers import current_snapshot_id, newest_candle_ts, read_candles

FeatureBuilder = Callable[[pl.DataFrame], pl.DataFrame]


@dataclass(frozen=True)
class CandleBatch:
    frame: pl.DataFrame  # exchange, symbol, timeframe, ts, open, high, low, close, volume
    snapshot_id: int
    start: dt.datetime | None
    end: dt.datetime | None
    # order-book snapshots / public trades (exchange, symbol, ...) of the series whose window
    # they cover, at the same snapshot (``models.microstructure``); None: none
    order_book: pl.DataFrame | None = None
    trades: pl.DataFrame | None = None
    # per series with any that covers its window: its funding and news data at the same
    # snapshot (``models.side_data``: the funding and sentiment feature groups)
    side: dict[tuple[str, str, str], SideInputs] = field(default_factory=dict)

    def series(self) -> list[SeriesInputs]:
        """Each series' candles with its own order book, trades, funding and news data."""
        return series_inputs(split_series(self.frame), self.order_book, self.trades, self.side)


def load_candles(
    con: duckdb.DuckDBPyConnection,
    *,
    symbols: Sequence[str],
    timeframe: str,
    days: float | None = 30,
    exchange: str | None = None,
    snapshot_id: int | None = None,
) -> CandleBatch:
    """Candles of ``symbols`` for the last ``days`` days (None: all), as of ``snapshot_id``.

    With ``snapshot_id=None`` the current snapshot is used and returned, so the caller can record
    it. The window ends at the newest candle among the symbols (not at the wall clock), so a
    retrain over historical data works the same as over live data.
    """
    if not symbols:
        raise ValueError("load_candles: no symbols given")
    snapshot = current_snapshot_id(con) if snapshot_id is None else int(snapshot_id)
    end = newest_candle_ts(
        con, symbols=symbols, timeframe=timeframe, exchange=exchange, snapshot_id=snapshot
    )
    if end is None:
        raise ValueError(
            f"no {timeframe} candles for {list(symbols)} at snapshot {snapshot}"
            + (f" on exchange {exchange!r}" if exchange else "")
        )
    start = end - dt.timedelta(days=days) if days is not None else None
    table = read_candles(
        con,
        symbols=symbols,
        timeframe=timeframe,
        exchange=exchange,
        after=start,
        snapshot_id=snapshot,
    )
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    order_book, trades = read_microstructure(con, frame, snapshot)
    side = read_side_data(con, frame, snapshot, start)
    return CandleBatch(frame, snapshot, start, end, order_book, trades, side)


@dataclass(frozen=True)
class SampleSet:
    """Model inputs and labels; sample ``i`` is the window ending at ``ts[i]`` of ``symbol[i]``."""

    windows: np.ndarray  # (n, window_len, n_features) float32, raw (unscaled) feature values
    labels: np.ndarray  # (n,) int64 in [0, 3): buy, hold, sell
    ts: np.ndarray  # (n,) datetime64[us] UTC end time of each window
    symbol: np.ndarray  # (n,) str
    forward_return: np.ndarray  # (n,) float64, close[t+h] / close[t] - 1 (what the label judges)
    # (n,) float64, open[t+1+h] / open[t+1] - 1: what a trade at the next open earns (label side,
    # never an input); NaN where the data ends before open[t+1+h]
    tradeable_return: np.ndarray
    feature_columns: tuple[str, ...]  # the columns of `windows` (features with data)
    feature_set_version: str
    all_feature_columns: tuple[str, ...] = ()  # the feature set's full column list (serving input)

    @property
    def serving_columns(self) -> tuple[str, ...]:
        return self.all_feature_columns or self.feature_columns

    def full_windows(self) -> np.ndarray:
        """Windows over ``serving_columns`` (what serving passes); absent columns are NaN."""
        columns = self.serving_columns
        if columns == self.feature_columns:
            return self.windows
        out = np.full((*self.windows.shape[:2], len(columns)), np.nan, dtype=np.float32)
        out[:, :, [columns.index(c) for c in self.feature_columns]] = self.windows
        return out

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index: np.ndarray) -> SampleSet:
        return SampleSet(
            windows=self.windows[index],
            labels=self.labels[index],
            ts=self.ts[index],
            symbol=self.symbol[index],
            forward_return=self.forward_return[index],
            tradeable_return=self.tradeable_return[index],
            feature_columns=self.feature_columns,
            feature_set_version=self.feature_set_version,
            all_feature_columns=self.all_feature_columns,
        )

    def last(self, n: int) -> SampleSet:
        """The ``n`` most recent samples (in time order)."""
        order = np.argsort(self.ts, kind="stable")
        return self.take(np.sort(order[-n:]) if n < len(self) else order)


def default_feature_spec() -> tuple[FeatureBuilder, list[str], str]:
    """The project's feature set (pipelines.features): builder, ordered columns, version."""
    from pipelines import features

    def build(candles: pl.DataFrame) -> pl.DataFrame:
        return features.build_features(candles)

    return build, list(features.feature_columns()), str(features.FEATURE_SET_VERSION)


@dataclass(frozen=True)
class FeaturizedSeries:
    """One exchange/symbol/timeframe: its candles (sorted by ts) and their feature frame."""

    candles: pl.DataFrame
    features: pl.DataFrame


def split_series(candles: pl.DataFrame) -> list[pl.DataFrame]:
    """``candles`` cut into one frame per exchange/symbol/timeframe (first-seen order)."""
    group_keys = [c for c in ("exchange", "symbol", "timeframe") if c in candles.columns]
    return candles.partition_by(group_keys, maintain_order=True) if group_keys else [candles]


def featurize_series(
    candles: pl.DataFrame | SeriesInputs, feature_builder: FeatureBuilder | None = None
) -> FeaturizedSeries:
    """Features of one series (the project feature set unless ``feature_builder`` is given);
    ``SeriesInputs``: with its order book and trades, joined as of each close.

    Series are independent here, so callers may run this per symbol in parallel (the retrain
    flow maps it on its task runner) and then call ``assemble_samples``."""
    inputs = candles if isinstance(candles, SeriesInputs) else SeriesInputs(candles)
    group = inputs.candles.sort("ts")
    if feature_builder is None and (
        inputs.order_book is not None or inputs.trades is not None or inputs.side is not None
    ):
        from pipelines import features

        built = features.build_features(
            group, order_book=inputs.order_book, trades=inputs.trades, side=inputs.side
        )
        return FeaturizedSeries(group, built.sort("ts"))
    builder = feature_builder or default_feature_spec()[0]
    return FeaturizedSeries(group, builder(group).sort("ts"))


def build_samples(
    candles: pl.DataFrame,
    *,
    window_len: int,
    label_config: LabelConfig,
    feature_builder: FeatureBuilder | None = None,
    feature_columns: Sequence[str] | None = None,
    feature_set_version: str | None = None,
    order_book: pl.DataFrame | None = None,
    trades: pl.DataFrame | None = None,
    side: Mapping[tuple[str, str, str], SideInputs] | None = None,
) -> SampleSet:
    """Features, labels and windows for every symbol/timeframe in ``candles``.

    A sample is kept when its whole window has finite feature values (warm-up rows are null)
    and its label exists. Without an explicit builder the project feature set is used, with
    ``order_book`` / ``trades`` (exchange, symbol, ...: ``CandleBatch``'s) and the series'
    funding and news data ``side`` (``CandleBatch.side``) when given.
    """
    if feature_builder is not None and (not feature_columns or feature_set_version is None):
        raise ValueError("build_samples: feature_columns and feature_set_version are required")
    if feature_builder is None and order_book is None and trades is None and not side:
        feature_builder = default_feature_spec()[0]  # resolved once here, not once per series
    built = [
        featurize_series(one, feature_builder)
        for one in series_inputs(split_series(candles), order_book, trades, side)
    ]
    return assemble_samples(
        built,
        window_len=window_len,
        label_config=label_config,
        feature_columns=feature_columns,
        feature_set_version=feature_set_version,
    )


def assemble_samples(
    built: Sequence[FeaturizedSeries],
    *,
    window_len: int,
    label_config: LabelConfig,
    feature_columns: Sequence[str] | None = None,
    feature_set_version: str | None = None,
) -> SampleSet:
    """Labels and windows of featurized series, merged in time order (see ``build_samples``).

    ``feature_columns``/``feature_set_version`` default to the project feature set."""
    if feature_columns is None or feature_set_version is None:
        _, default_columns, default_version = default_feature_spec()
        feature_columns = feature_columns or default_columns
        feature_set_version = feature_set_version or default_version
    all_columns = list(feature_columns)
    for series in built:
        missing = [c for c in all_columns if c not in series.features.columns]
        if missing:
            raise ValueError(f"build_samples: feature frame lacks columns {missing}")
    # Features without any value in the data (e.g. order-book features when no order book was
    # collected) cannot be learned from: they are left out of the model's inputs.
    columns = [
        c
        for c in all_columns
        if any(s.features[c].drop_nulls().drop_nans().len() > 0 for s in built)
    ]
    if not columns:
        raise ValueError("build_samples: no feature column has any value in the data")
    parts: list[SampleSet] = []
    for series in built:
        group, feats = series.candles, series.features
        labels = make_labels(group, label_config)
        joined = feats.select("ts", *columns).join(labels, on="ts", how="left")
        values = joined.select(columns).cast(pl.Float32).to_numpy().astype(np.float32, copy=False)
        windows = make_windows(values, window_len)
        if windows.shape[0] == 0:
            continue
        tail = slice(window_len - 1, None)
        label = joined["label"].to_numpy()[tail]
        finite = np.isfinite(windows).all(axis=(1, 2))
        keep = finite & ~np.isnan(label.astype(np.float64))
        symbol = str(group["symbol"][0]) if "symbol" in group.columns else ""
        ts = joined["ts"].dt.replace_time_zone(None).to_numpy()[tail].astype("datetime64[us]")
        parts.append(
            SampleSet(
                windows=windows[keep],
                labels=label[keep].astype(np.int64),
                ts=ts[keep],
                symbol=np.full(int(keep.sum()), symbol, dtype=object),
                forward_return=joined["forward_return"].to_numpy()[tail][keep].astype(np.float64),
                tradeable_return=joined["tradeable_return"]
                .fill_null(np.nan)
                .to_numpy()[tail][keep]
                .astype(np.float64),
                feature_columns=tuple(columns),
                feature_set_version=feature_set_version,
                all_feature_columns=tuple(all_columns),
            )
        )
    if not parts:
        raise ValueError(f"build_samples: no complete windows of {window_len} rows with labels")
    merged = SampleSet(
        windows=np.concatenate([p.windows for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        ts=np.concatenate([p.ts for p in parts]),
        symbol=np.concatenate([p.symbol for p in parts]),
        forward_return=np.concatenate([p.forward_return for p in parts]),
        tradeable_return=np.concatenate([p.tradeable_return for p in parts]),
        feature_columns=tuple(columns),
        feature_set_version=feature_set_version,
        all_feature_columns=tuple(all_columns),
    )
    return merged.take(np.argsort(merged.ts, kind="stable"))


def split_samples(
    samples: SampleSet,
    *,
    purge_bars: int,
    validation_fraction: float = 0.15,
    test_fraction: float = 0.15,
    max_samples: int | None = None,
) -> tuple[SampleSet, SampleSet, SampleSet]:
    """(train, validation, test) in time order with purge gaps
    (see ``pipelines.labels.time_splits``); with ``max_samples`` only the most recent
    samples are used."""
    if max_samples is not None and len(samples) > max_samples:
        samples = samples.last(max_samples)
    splits = time_splits(
        samples.ts,
        purge_bars=purge_bars,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
    )
    return samples.take(splits.train), samples.take(splits.validation), samples.take(splits.test)
