"""Adaptive decision thresholds from rolling realized accuracy.

Mode by the rolling accuracy of the current model's resolved predictions (at least
``min_resolved`` of them, else ``base``):

* accuracy > ``aggressive_above`` (0.6): ``aggressive`` — every threshold lowered by ``step``;
* accuracy < ``conservative_below`` (0.45): ``conservative`` — every threshold raised by ``step``;
* otherwise ``base``.

Thresholds are the buy / sell probability fractions and the minimum confidence of
``trading.decision.Thresholds``, each clipped to [``floor``, ``ceiling``]. Every change of mode
returns a ``ThresholdChange`` with its reason (the loop logs and records it).
"""

from __future__ import annotations

from dataclasses import dataclass

from trading.decision import Thresholds

MODES = ("conservative", "base", "aggressive")


@dataclass(frozen=True, slots=True)
class ThresholdPolicy:
    base: Thresholds = Thresholds(buy_fraction=0.45, sell_fraction=0.45, min_confidence=0.6)
    aggressive_above: float = 0.6
    conservative_below: float = 0.45
    step: float = 0.05
    floor: float = 0.35
    ceiling: float = 0.9
    min_resolved: int = 30

    def __post_init__(self) -> None:
        if not self.conservative_below <= self.aggressive_above:
            raise ValueError("ThresholdPolicy: conservative_below must be <= aggressive_above")
        if not 0.0 <= self.floor <= self.ceiling <= 1.0:
            raise ValueError("ThresholdPolicy: need 0 <= floor <= ceiling <= 1")

    def thresholds(self, mode: str) -> Thresholds:
        shift = {"aggressive": -self.step, "base": 0.0, "conservative": self.step}[mode]

        def clip(x: float) -> float:
            return min(max(x + shift, self.floor), self.ceiling)

        b = self.base
        return Thresholds(clip(b.buy_fraction), clip(b.sell_fraction), clip(b.min_confidence))


@dataclass(frozen=True, slots=True)
class ThresholdChange:
    old_mode: str
    new_mode: str
    thresholds: Thresholds
    reason: str


class AdaptiveThresholds:
    def __init__(self, policy: ThresholdPolicy) -> None:
        self.policy = policy
        self.mode = "base"
        self.current = policy.thresholds("base")

    def mode_for(self, accuracy: float, resolved: int) -> tuple[str, str]:
        p = self.policy
        if resolved < p.min_resolved:
            return "base", f"{resolved} resolved predictions < {p.min_resolved}"
        if accuracy > p.aggressive_above:
            return "aggressive", f"rolling accuracy {accuracy:.3f} > {p.aggressive_above}"
        if accuracy < p.conservative_below:
            return "conservative", f"rolling accuracy {accuracy:.3f} < {p.conservative_below}"
        return "base", (
            f"rolling accuracy {accuracy:.3f} within [{p.conservative_below}, {p.aggressive_above}]"
        )

    def update(self, accuracy: float, resolved: int) -> ThresholdChange | None:
        mode, why = self.mode_for(accuracy, resolved)
        if mode == self.mode:
            return None
        old = self.mode
        self.mode = mode
        self.current = self.policy.thresholds(mode)
        t = self.current
        return ThresholdChange(
            old,
            mode,
            t,
            f"{old} -> {mode}: {why}; buy>={t.buy_fraction:.2f} sell>={t.sell_fraction:.2f} "
            f"min_confidence={t.min_confidence:.2f}",
        )

    def to_dict(self) -> dict[str, str]:
        return {"mode": self.mode}

    def load(self, data: dict[str, str]) -> None:
        self.mode = data.get("mode", "base")
        self.current = self.policy.thresholds(self.mode)
