"""The model registry: the ``models`` / ``model_metrics`` / ``model_promotions`` tables plus the
ONNX files under ``TRADELOOP_HOME/models/<name>/``. Imports no torch.

* ``register_model`` refuses a file that ONNX Runtime cannot load, that is not a tradeloop
  signal model, or whose feature-set version / columns differ from what the caller trained on,
  with a ``ModelFileError`` naming the file and the problem; an accepted file is copied under
  the home, its sha256 recorded, and the model starts as a ``challenger``.
* Promotion rule (``PromotionRule``, ``decide_promotion``), on the challenger's out-of-sample
  test window (see ``models.metrics.window_scores`` for the figures):
  (a) its log-loss must be below that of the TRAINING class frequencies predicted for every bar
      of the window (``log_loss_train_frequency``). That is the majority-class reference for
      probabilities: a model that learned only the class balance scores exactly it. The one-hot
      majority class is no reference for a log-loss: every bar it misses costs ``-ln 1e-15``
      (about 34.5), so its log-loss is ~12-15 by construction and any model beats it;
  (b) when a champion exists, the challenger's IC (Spearman of ``p_buy - p_sell`` against the
      tradeable return) must exceed the champion's on the SAME window (the champion scored
      through its ONNX file) by more than ``min_ic_gain``. IC, not accuracy or F1: the model is
      judged on how it ranks what a trade could earn, and accuracy flatters the majority class.
  With no champion (or one trained on another feature set, which cannot run on today's
  features and so has no figures on the window), (a) alone decides.
* On folds (``decide_promotion`` when the challenger's figures carry ``cv_ic_mean``: every
  retrain with ``TrainConfig.cv_folds >= 2``, the default; see ``models.cv``):
  (a) the challenger's MEAN log-loss over the K purged folds must be below the mean of the
      folds' training-frequency baselines;
  (b) against a champion of ANOTHER configuration (its hyperparameters differ: e.g. a tuned
      one), that configuration is cross-validated on the same folds and the challenger's mean
      fold IC minus its standard error (std / sqrt(K)) must exceed the champion's mean fold IC
      (+ ``min_ic_gain``): one standard error of margin, so a lucky fold does not promote;
  (b') against a champion of the SAME configuration (a scheduled retrain: only the data
      moved), the fold figures of both would be the same numbers, so the models are compared
      where they differ: IC on the challenger's newest out-of-sample window, as in (b) above.
* ``promote`` is atomic: one transaction retires the old champion, crowns the new one and
  records the event; ``rollback`` restores the champion that the current one replaced.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from models.metrics import WINDOW_SCORES
from models.runtime import ModelFileError, ModelInfo, model_info, open_session
from warehouse import Settings, upsert
from warehouse.retry import run_transaction

STATUSES = ("challenger", "champion", "retired")
# stored per model and window (model_metrics) by the retrain; what decide_promotion reads
PROMOTION_FIGURES = WINDOW_SCORES
DEFAULT_NAME = "signal"


class RegistryError(RuntimeError):
    """A registry operation that cannot be done (unknown model, nothing to roll back to...)."""


@dataclass(frozen=True)
class ModelRecord:
    model_id: str
    version: int
    name: str
    created_at: dt.datetime
    feature_set_version: str
    training_snapshot_id: int | None
    hyperparameters: dict[str, Any]
    metrics: dict[str, Any]
    onnx_path: Path
    onnx_sha256: str
    status: str
    promoted_at: dt.datetime | None


@dataclass(frozen=True)
class PromotionRule:
    # (a): the challenger's log-loss must be below the training-frequency baseline's minus this
    min_log_loss_gain: float = 0.0
    # (b): the challenger's IC must exceed the champion's on the same window by more than this
    min_ic_gain: float = 0.0

    def describe(self, *, folds: bool = False) -> str:
        loss = f" - {self.min_log_loss_gain}" if self.min_log_loss_gain else ""
        ic = f" + {self.min_ic_gain}" if self.min_ic_gain else ""
        if folds:
            return (
                f"mean log-loss over the purged folds < the mean of the folds' training class "
                f"frequencies' log-loss{loss}, and against a champion of another configuration "
                f"mean fold IC - its standard error > the champion configuration's mean fold "
                f"IC{ic} on the same folds (same configuration: IC > the champion's{ic} on the "
                f"newest out-of-sample window)"
            )
        return (
            f"log-loss < the training class frequencies' log-loss{loss} on the out-of-sample "
            f"window, and (against a champion) IC > the champion's{ic} on the same window"
        )


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def _figure(metrics: dict[str, float], name: str) -> float:
    value = metrics.get(name)
    return float(value) if value is not None else math.nan


def _two(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` with 4 decimals, or as many more (up to 8) as it takes to tell them
    apart: a reason that says "1.0485 beats 1.0485" explains nothing."""
    for digits in range(4, 9):
        left, right = f"{a:.{digits}f}", f"{b:.{digits}f}"
        if left != right or a == b:
            break
    return left, right


def _ic_text(point: str, metrics: dict[str, float] | None) -> str:
    lo, hi = (_figure(metrics or {}, k) for k in ("ic_ci_low", "ic_ci_high"))
    ci = f" (95% CI {lo:.4f}..{hi:.4f})" if math.isfinite(lo) and math.isfinite(hi) else ""
    return f"{point}{ci}"


def decide_promotion(
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    rule: PromotionRule | None = None,
) -> Decision:
    """Apply the promotion rule (see module docs) to the challenger's figures on its
    out-of-sample window and, when there is a comparable champion, the champion's figures on
    that same window. The reason starts with the rule that decided ("log-loss: ...",
    "IC: ...") and gives the figures. A missing or NaN figure fails its rule. Figures with a
    ``cv_ic_mean`` are decided on the folds (``_decide_on_folds``)."""
    rule = rule or PromotionRule()
    if "cv_ic_mean" in challenger:
        return _decide_on_folds(challenger, champion, rule)
    loss = _figure(challenger, "log_loss")
    base = _figure(challenger, "log_loss_train_frequency")
    beats_base = loss < base - rule.min_log_loss_gain  # False when either is NaN
    loss_s, base_s = _two(loss, base)
    loss_text = (
        f"log-loss {loss_s} {'beats' if beats_base else 'does not beat'} the training-frequency "
        f"baseline's {base_s} on the out-of-sample window"
        + (f" (need < baseline - {rule.min_log_loss_gain})" if rule.min_log_loss_gain else "")
    )
    ours, theirs = _figure(challenger, "ic"), _figure(champion or {}, "ic")
    ours_s, theirs_s = _two(ours, theirs)
    ic_pair = f"{_ic_text(ours_s, challenger)}", f"{_ic_text(theirs_s, champion)}"
    if not beats_base:
        # the IC comparison, when there is one, did not decide; shown for the record
        against = (
            f"; IC {ic_pair[0]} vs the champion's {ic_pair[1]} not compared"
            if champion is not None
            else ""
        )
        return Decision(False, f"log-loss: {loss_text}{against}")
    if champion is None:
        return Decision(True, f"log-loss: {loss_text}; no comparable champion")
    ok = _ic_beats(ours, theirs, rule)
    need = f" + {rule.min_ic_gain}" if rule.min_ic_gain else ""
    return Decision(
        ok,
        f"IC: {ic_pair[0]} {'beats' if ok else 'does not beat'} the champion's "
        f"{ic_pair[1]} on the same window (need > champion's{need}); {loss_text}",
    )


def _ic_beats(ours: float, theirs: float, rule: PromotionRule) -> bool:
    if not math.isfinite(ours):
        return False
    if not math.isfinite(theirs):
        return True  # a champion whose score does not rank (constant) has no IC to defend
    return ours > theirs + rule.min_ic_gain


def _decide_on_folds(
    challenger: dict[str, float], champion: dict[str, float] | None, rule: PromotionRule
) -> Decision:
    """The rule on the K purged folds (module docs, "On folds"); ``champion`` holds the
    champion configuration's fold figures (``cv_ic_mean``) when its configuration differs,
    else its figures on the newest out-of-sample window (``ic``)."""
    folds = _figure(challenger, "cv_folds")
    k = int(folds) if math.isfinite(folds) else 0
    loss = _figure(challenger, "cv_log_loss_mean")
    base = _figure(challenger, "cv_log_loss_train_frequency_mean")
    beats_base = loss < base - rule.min_log_loss_gain
    loss_s, base_s = _two(loss, base)
    loss_text = (
        f"mean log-loss {loss_s} over {k} purged folds "
        f"{'beats' if beats_base else 'does not beat'} the folds' training-frequency "
        f"baseline's {base_s}"
        + (f" (need < baseline - {rule.min_log_loss_gain})" if rule.min_log_loss_gain else "")
    )
    mean, se = _figure(challenger, "cv_ic_mean"), _figure(challenger, "cv_ic_se")
    need = f" + {rule.min_ic_gain}" if rule.min_ic_gain else ""
    if not beats_base:
        return Decision(False, f"log-loss: {loss_text}; fold IC {mean:.4f} (SE {se:.4f})")
    if champion is None:
        return Decision(
            True, f"log-loss: {loss_text}; fold IC {mean:.4f} (SE {se:.4f}); no comparable champion"
        )
    if "cv_ic_mean" in champion:
        theirs = _figure(champion, "cv_ic_mean")
        # one standard error of margin; a NaN SE (one fold) fails
        ok = _ic_beats(mean - se, theirs, rule) and math.isfinite(se)
        return Decision(
            ok,
            f"IC: mean fold IC {mean:.4f} - SE {se:.4f} = {mean - se:.4f} "
            f"{'beats' if ok else 'does not beat'} the champion configuration's mean fold IC "
            f"{theirs:.4f} on the same {k} folds (need > champion's{need}); {loss_text}",
        )
    ours_s, theirs_s = _two(_figure(challenger, "ic"), _figure(champion, "ic"))
    ok = _ic_beats(_figure(challenger, "ic"), _figure(champion, "ic"), rule)
    return Decision(
        ok,
        f"IC: {_ic_text(ours_s, challenger)} {'beats' if ok else 'does not beat'} the "
        f"champion's {_ic_text(theirs_s, champion)} on the newest out-of-sample window (same "
        f"configuration: its fold figures are the challenger's; need > champion's{need}); "
        f"{loss_text}; fold IC {mean:.4f} (SE {se:.4f})",
    )


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def inspect_onnx(path: Path | str) -> ModelInfo:
    """Load ``path`` in ONNX Runtime and read its tradeloop metadata (ModelFileError if bad)."""
    session = open_session(path)
    return model_info(session, str(path))


def _row_to_record(row: dict[str, Any]) -> ModelRecord:
    return ModelRecord(
        model_id=row["model_id"],
        version=int(row["version"]),
        name=row["name"],
        created_at=row["created_at"],
        feature_set_version=row["feature_set_version"],
        training_snapshot_id=row["training_snapshot_id"],
        hyperparameters=json.loads(row["hyperparameters_json"] or "{}"),
        metrics=json.loads(row["metrics_json"] or "{}"),
        onnx_path=Path(row["onnx_path"]),
        onnx_sha256=row["onnx_sha256"],
        status=row["status"],
        promoted_at=row["promoted_at"],
    )


_SELECT = (
    "SELECT model_id, version, name, created_at, feature_set_version, training_snapshot_id, "
    "hyperparameters_json, metrics_json, onnx_path, onnx_sha256, status, promoted_at FROM models"
)


def _fetch(
    con: duckdb.DuckDBPyConnection, where: str = "TRUE", params: list[Any] | None = None
) -> list[ModelRecord]:
    cursor = con.execute(f"{_SELECT} WHERE {where} ORDER BY name, version", params or [])
    names = [d[0] for d in cursor.description]
    return [_row_to_record(dict(zip(names, row, strict=True))) for row in cursor.fetchall()]


def list_models(con: duckdb.DuckDBPyConnection, name: str | None = None) -> list[ModelRecord]:
    return _fetch(con, "name = ?", [name]) if name else _fetch(con)


def get_model(con: duckdb.DuckDBPyConnection, model_id: str) -> ModelRecord:
    found = _fetch(con, "model_id = ?", [model_id])
    if not found:
        raise RegistryError(f"no model {model_id!r} in the registry")
    return found[0]


def champion(con: duckdb.DuckDBPyConnection, name: str = DEFAULT_NAME) -> ModelRecord | None:
    found = _fetch(con, "name = ? AND status = 'champion'", [name])
    return found[-1] if found else None


def _models_row(record: ModelRecord) -> pa.Table:
    ts = pa.timestamp("us", tz="UTC")
    return pa.table(
        {
            "model_id": [record.model_id],
            "version": pa.array([record.version], pa.int32()),
            "name": [record.name],
            "created_at": pa.array([record.created_at], ts),
            "feature_set_version": [record.feature_set_version],
            "training_snapshot_id": pa.array([record.training_snapshot_id], pa.int64()),
            "hyperparameters_json": [json.dumps(record.hyperparameters, default=str)],
            "metrics_json": [json.dumps(record.metrics, default=str)],
            "onnx_path": [str(record.onnx_path)],
            "onnx_sha256": [record.onnx_sha256],
            "status": [record.status],
            "promoted_at": pa.array([record.promoted_at], ts),
        }
    )


def record_metrics(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    model_id: str,
    window_name: str,
    metrics: dict[str, float],
    *,
    window_start: dt.datetime | None = None,
    window_end: dt.datetime | None = None,
) -> int:
    """Write one row per metric into ``model_metrics`` (idempotent by model, window, metric)."""
    now = dt.datetime.now(dt.UTC)
    names = sorted(metrics)
    ts = pa.timestamp("us", tz="UTC")
    table = pa.table(
        {
            "model_id": [model_id] * len(names),
            "window_name": [window_name] * len(names),
            "metric": names,
            "value": pa.array([float(metrics[n]) for n in names], pa.float64()),
            "window_start": pa.array([window_start] * len(names), ts),
            "window_end": pa.array([window_end] * len(names), ts),
            "evaluated_at": pa.array([now] * len(names), ts),
        }
    )
    return upsert(con, "model_metrics", table, settings=settings).written


def model_metrics(
    con: duckdb.DuckDBPyConnection, model_id: str, window_name: str
) -> dict[str, float]:
    rows = con.execute(
        "SELECT metric, value FROM model_metrics WHERE model_id = ? AND window_name = ?",
        [model_id, window_name],
    ).fetchall()
    return {str(metric): float(value) for metric, value in rows}


def register_model(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    onnx_file: Path | str,
    *,
    feature_set_version: str,
    training_snapshot_id: int | None,
    hyperparameters: dict[str, Any],
    metrics: dict[str, Any],
    name: str = DEFAULT_NAME,
    expected_feature_columns: tuple[str, ...] | list[str] | None = None,
    expected_sha256: str | None = None,
) -> ModelRecord:
    """Check ``onnx_file``, copy it under ``home/models/<name>/`` and add it as a challenger.

    Registering the same file (same sha256) under the same name again returns the existing record.
    """
    source = Path(onnx_file)
    sha = _sha256(source) if source.is_file() else ""
    if expected_sha256 is not None and sha != expected_sha256:
        raise ModelFileError(
            f"{source}: sha256 {sha or '(missing file)'} differs from the exported "
            f"{expected_sha256}"
        )
    info = inspect_onnx(source)
    if info.feature_set_version != feature_set_version:
        raise ModelFileError(
            f"{source}: the graph was built for feature set {info.feature_set_version!r}, "
            f"but registration says {feature_set_version!r}"
        )
    if (
        expected_feature_columns is not None
        and tuple(expected_feature_columns) != info.feature_columns
    ):
        raise ModelFileError(
            f"{source}: the graph's feature columns {list(info.feature_columns)} differ from the "
            f"expected {list(expected_feature_columns)}"
        )
    existing = _fetch(con, "name = ? AND onnx_sha256 = ?", [name, sha])
    if existing:
        return existing[0]
    row = con.execute(
        "SELECT coalesce(max(version), 0) FROM models WHERE name = ?", [name]
    ).fetchone()
    version = int(row[0] if row else 0) + 1
    model_id = f"{name}-v{version}-{sha[:8]}"
    target = settings.home / "models" / name / f"{model_id}.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".onnx.tmp")
    shutil.copyfile(source, tmp)
    if _sha256(tmp) != sha:
        tmp.unlink(missing_ok=True)
        raise ModelFileError(f"{source}: copy to {target} does not match the source's sha256")
    tmp.replace(target)
    record = ModelRecord(
        model_id=model_id,
        version=version,
        name=name,
        created_at=dt.datetime.now(dt.UTC),
        feature_set_version=feature_set_version,
        training_snapshot_id=training_snapshot_id,
        hyperparameters=hyperparameters,
        metrics=metrics,
        onnx_path=target.resolve(),
        onnx_sha256=sha,
        status="challenger",
        promoted_at=None,
    )
    upsert(con, "models", _models_row(record), settings=settings)
    return record


def verify_file(record: ModelRecord) -> None:
    """Raise ModelFileError unless the registered file exists with its recorded sha256."""
    if not record.onnx_path.is_file():
        raise ModelFileError(f"{record.model_id}: file {record.onnx_path} is missing")
    sha = _sha256(record.onnx_path)
    if sha != record.onnx_sha256:
        raise ModelFileError(
            f"{record.model_id}: {record.onnx_path} sha256 {sha} != registered {record.onnx_sha256}"
        )


def _switch_champion(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    new_champion_id: str,
    *,
    action: str,
    rule: str,
    expect_current: str | None | bool = False,
) -> ModelRecord:
    """One transaction: retire the champion of the model's name, crown ``new_champion_id``,
    record the event. ``expect_current`` (when not False) guards against a concurrent switch."""
    target = get_model(con, new_champion_id)
    verify_file(target)
    now = dt.datetime.now(dt.UTC)

    def body(con: duckdb.DuckDBPyConnection) -> str | None:
        rows = con.execute(
            "SELECT model_id FROM models WHERE name = ? AND status = 'champion'", [target.name]
        ).fetchall()
        current = rows[0][0] if rows else None
        if expect_current is not False and current != expect_current:
            raise RegistryError(f"champion changed concurrently (now {current!r}); try again")
        con.execute(
            "UPDATE write_tokens SET writes = writes + 1 "
            "WHERE table_name IN ('models', 'model_promotions')"
        )
        con.execute(
            "UPDATE models SET status = 'retired' "
            "WHERE name = ? AND status = 'champion' AND model_id <> ?",
            [target.name, target.model_id],
        )
        con.execute(
            "UPDATE models SET status = 'champion', promoted_at = ? WHERE model_id = ?",
            [now, target.model_id],
        )
        con.execute(
            "INSERT INTO model_promotions (event_id, model_id, previous_model_id, action, rule, "
            "event_at, ingested_at) "
            "VALUES (?, ?, ?, ?, ?, ?, now())",
            [uuid.uuid4().hex, target.model_id, current, action, rule, now],
        )
        return current

    run_transaction(
        con,
        body,
        what=f"{action} {new_champion_id}",
        max_attempts=settings.write_max_attempts,
        backoff_initial_s=settings.write_backoff_initial_s,
        backoff_max_s=settings.write_backoff_max_s,
    )
    return get_model(con, new_champion_id)


def promote(
    con: duckdb.DuckDBPyConnection, settings: Settings, model_id: str, *, reason: str = "manual"
) -> ModelRecord:
    """Make ``model_id`` the champion of its name (atomically retiring the current one)."""
    record = get_model(con, model_id)
    if record.status == "champion":
        return record
    return _switch_champion(con, settings, model_id, action="promote", rule=reason)


def previous_champion(con: duckdb.DuckDBPyConnection, name: str = DEFAULT_NAME) -> str | None:
    """The model the current champion replaced when it was (last) promoted."""
    current = champion(con, name)
    if current is None:
        return None
    row = con.execute(
        "SELECT previous_model_id FROM model_promotions WHERE model_id = ? AND action = 'promote' "
        "ORDER BY event_at DESC LIMIT 1",
        [current.model_id],
    ).fetchone()
    return row[0] if row and row[0] else None


def rollback(
    con: duckdb.DuckDBPyConnection, settings: Settings, name: str = DEFAULT_NAME
) -> ModelRecord:
    """Retire the current champion and restore the one it replaced."""
    current = champion(con, name)
    if current is None:
        raise RegistryError(f"no champion named {name!r}: nothing to roll back")
    previous = previous_champion(con, name)
    if previous is None:
        raise RegistryError(
            f"champion {current.model_id} replaced no earlier champion: nothing to roll back to"
        )
    return _switch_champion(
        con,
        settings,
        previous,
        action="rollback",
        rule=f"rollback of {current.model_id}",
        expect_current=current.model_id,
    )


def promote_if_better(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    challenger_id: str,
    window_name: str,
    *,
    rule: PromotionRule | None = None,
) -> Decision:
    """Apply the rule to both models' figures on ``window_name`` (from ``model_metrics``) and
    promote the challenger atomically if it passes. The champion needs an IC on that same
    window; without one (or without a champion) the challenger is judged by its log-loss
    against the training-frequency baseline alone."""
    challenger = get_model(con, challenger_id)
    metrics = model_metrics(con, challenger_id, window_name)
    if "log_loss" not in metrics:
        raise RegistryError(f"{challenger_id} has no metrics on window {window_name!r}")
    current = champion(con, challenger.name)
    if current is not None and current.model_id == challenger_id:
        return Decision(False, f"{challenger_id} is already the champion")
    theirs = model_metrics(con, current.model_id, window_name) if current else {}
    comparable = "ic" in theirs or "cv_ic_mean" in theirs
    decision = decide_promotion(metrics, theirs if comparable else None, rule)
    if decision.promote:
        _switch_champion(
            con,
            settings,
            challenger_id,
            action="promote",
            rule=decision.reason,
            expect_current=current.model_id if current else None,
        )
    return decision
