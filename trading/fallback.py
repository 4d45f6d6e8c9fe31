"""Which model decides: the registry's champion in ONNX Runtime, or the RSI fallback.

``ModelManager.refresh()`` (called between steps) looks up the champion of ``model_name``:

* no champion -> fallback ("no champion model");
* a champion not loaded yet -> load it (registry file check: present, sha256 as registered;
  ONNX Runtime loads it; its feature-set version equals the engine's). On success it is hot
  swapped in. A model with ANOTHER feature-set version is refused with a clear message and the
  current model (or the fallback) is kept; a missing or corrupt file engages the fallback when
  there is no loaded model to keep. A refused model is not retried until the champion changes.

At prediction time, an ONNX Runtime error or low feature quality makes that step's decision
come from the RSI rule. Every switch between "model" and "fallback" is returned as an event
(the loop logs it and writes it to ``loop_events``); predictions made by the fallback are
stored with ``model_id = 'rsi_fallback'``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from models.registry import ModelRecord, verify_file
from models.runtime import ModelFileError, OnnxPredictor

FALLBACK_ID = "rsi_fallback"


@dataclass(frozen=True, slots=True)
class ModelEvent:
    kind: str  # "model" | "fallback"
    message: str


ChampionLookup = Callable[[], ModelRecord | None]


class ModelManager:
    def __init__(self, lookup: ChampionLookup, feature_set_version: str) -> None:
        self.lookup = lookup
        self.feature_set_version = feature_set_version
        self.predictor: OnnxPredictor | None = None
        self.model_id: str | None = None
        self.last_seen: str | None = None  # champion id last attempted
        self.fallback_reason: str = "no model loaded yet"
        self.generation = 0  # increments on every successful swap

    @property
    def active_id(self) -> str:
        return self.model_id if self.predictor is not None and self.model_id else FALLBACK_ID

    def refresh(self) -> list[ModelEvent]:
        try:
            record = self.lookup()
        except Exception as exc:  # registry unreachable: keep what we have
            return [
                ModelEvent(
                    "model",
                    f"registry lookup failed ({type(exc).__name__}: {exc}); "
                    f"keeping {self.active_id}",
                )
            ]
        if record is None:
            if self.last_seen is None and self.predictor is None:
                self.last_seen = ""
                self.fallback_reason = "no champion model in the registry"
                return [ModelEvent("fallback", f"fallback engaged: {self.fallback_reason}")]
            return []
        if record.model_id == self.last_seen:
            return []
        self.last_seen = record.model_id
        return self._load(record)

    def _load(self, record: ModelRecord) -> list[ModelEvent]:
        keep = self.active_id
        try:
            if record.feature_set_version != self.feature_set_version:
                raise ModelFileError(
                    f"model {record.model_id} was trained on feature set "
                    f"{record.feature_set_version!r}, but this engine computes "
                    f"{self.feature_set_version!r}"
                )
            verify_file(record)
            predictor = OnnxPredictor.load(Path(record.onnx_path), self.feature_set_version)
        except ModelFileError as exc:
            feature_mismatch = "feature set" in str(exc)
            if feature_mismatch or self.predictor is not None:
                return [
                    ModelEvent(
                        "model", f"refused new champion {record.model_id}: {exc}; keeping {keep}"
                    )
                ]
            self.fallback_reason = f"champion {record.model_id} unusable: {exc}"
            return [ModelEvent("fallback", f"fallback engaged: {self.fallback_reason}")]
        was_fallback = self.predictor is None
        old = self.model_id
        self.predictor = predictor
        self.model_id = record.model_id
        self.generation += 1
        msg = f"loaded champion {record.model_id}" + (f" (replacing {old})" if old else "")
        events = [ModelEvent("model", msg)]
        if was_fallback:
            events.append(
                ModelEvent("fallback", f"fallback released: model {record.model_id} decides again")
            )
        return events
