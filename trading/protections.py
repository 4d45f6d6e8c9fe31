"""Protections of the serving loop, on top of the shared risk code (``trading.risk``).

Lock periods are counted in candles (steps of the loop's timeframe).

* **Kill switch** (accuracy): when the current model's rolling accuracy over at least
  ``kill_min_resolved`` resolved predictions falls below ``kill_accuracy_below`` (0.4), the
  shared ``RiskState`` kill switch is set (no new positions; exits still run). The drawdown leg
  is ``RiskLimits.max_drawdown_fraction`` in ``trading.risk``. Either stays on until a NEW
  champion is loaded or it is reset by hand (``tradeloop kill --reset``).
* **Stop-loss guard**: ``stoploss_guard_count`` stop-loss exits within
  ``stoploss_guard_lookback_candles`` lock new entries (all symbols) for
  ``stoploss_guard_lock_candles``.
* **Max-drawdown lock**: equity more than ``drawdown_lock_fraction`` below its peak over the last
  ``drawdown_lookback_candles`` locks new entries for ``drawdown_lock_candles``.
* **Cooldown**: after any exit of a symbol, no new entry in that symbol for ``cooldown_candles``.
* **Manual kill**: while the file ``TRADELOOP_HOME/serve/<account>.kill`` exists (written by
  ``tradeloop kill``), the loop sends no new orders at all and cancels its open ones; the file is
  checked at every step. ``tradeloop kill --reset`` removes it and writes ``<account>.reset``,
  which clears the kill switch at the next step.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from trading.domain import Decision, Fill


@dataclass(frozen=True, slots=True)
class ProtectionConfig:
    kill_accuracy_below: float | None = 0.4
    kill_min_resolved: int = 30
    stoploss_guard_count: int | None = 3
    stoploss_guard_lookback_candles: int = 60
    stoploss_guard_lock_candles: int = 30
    drawdown_lock_fraction: float | None = 0.1
    drawdown_lookback_candles: int = 240
    drawdown_lock_candles: int = 60
    cooldown_candles: int = 3

    @classmethod
    def off(cls) -> ProtectionConfig:
        """No protections (used to hold the loop equal to a plain backtest)."""
        return cls(None, 0, None, 0, 0, None, 0, 0, 0)


def kill_file(home: Path, account: str) -> Path:
    return home / "serve" / f"{account}.kill"


def reset_file(home: Path, account: str) -> Path:
    return home / "serve" / f"{account}.reset"


@dataclass
class Protections:
    config: ProtectionConfig
    global_lock_until: int = -1  # candle index (exclusive) until which entries are locked
    global_lock_reason: str = ""
    symbol_lock_until: dict[str, int] = field(default_factory=dict)
    stoploss_candles: deque[int] = field(default_factory=deque)
    # (candle, equity) of the candles that can still be the look-back peak: equities strictly
    # decreasing from the front (a monotonic queue), so the peak is the front, O(1) a candle
    equity_window: deque[tuple[int, float]] = field(default_factory=deque)
    manual_kill: bool = False

    def check_accuracy(self, accuracy: float, resolved: int) -> str | None:
        """The kill reason when rolling accuracy calls for the kill switch, else None."""
        c = self.config
        if c.kill_accuracy_below is None or resolved < c.kill_min_resolved:
            return None
        if accuracy < c.kill_accuracy_below:
            return (
                f"rolling accuracy {accuracy:.3f} < {c.kill_accuracy_below} over {resolved} "
                "resolved predictions"
            )
        return None

    def on_equity(self, candle: int, equity: float) -> str | None:
        """Max-drawdown lock; returns a message when a lock starts. Called after candle
        ``candle``'s decision: the lock blocks candles ``candle + 1`` .. ``candle + N``."""
        c = self.config
        if c.drawdown_lock_fraction is None:
            return None
        w = self.equity_window
        while w and w[-1][1] <= equity:
            w.pop()  # never the peak again while this candle is in the window
        w.append((candle, equity))
        while w and w[0][0] <= candle - c.drawdown_lookback_candles:
            w.popleft()
        peak = w[0][1]
        if candle >= self.global_lock_until and equity < peak * (1 - c.drawdown_lock_fraction):
            self.global_lock_until = candle + 1 + c.drawdown_lock_candles
            self.global_lock_reason = (
                f"max-drawdown lock: equity {equity:.2f} is {1 - equity / peak:.2%} below the "
                f"{c.drawdown_lookback_candles}-candle peak {peak:.2f}"
            )
            return (
                f"{self.global_lock_reason}; entries locked for {c.drawdown_lock_candles} candles"
            )
        return None

    def on_fills(self, candle: int, fills: tuple[Fill, ...]) -> list[str]:
        """Cooldown after exits, stop-loss guard; returns messages for locks that start.

        Called with the fills of candle ``candle`` BEFORE that candle's decision is applied, so a
        lock of N candles blocks the decisions of candles ``candle`` .. ``candle + N - 1``."""
        c = self.config
        out: list[str] = []
        for f in fills:
            if f.reason in ("exit", "stop_loss", "take_profit", "flip") and c.cooldown_candles > 0:
                self.symbol_lock_until[f.symbol] = candle + c.cooldown_candles
            if f.reason == "stop_loss" and c.stoploss_guard_count is not None:
                self.stoploss_candles.append(candle)
        if c.stoploss_guard_count is not None:
            s = self.stoploss_candles
            while s and s[0] <= candle - c.stoploss_guard_lookback_candles:
                s.popleft()
            if len(s) >= c.stoploss_guard_count and candle >= self.global_lock_until:
                self.global_lock_until = candle + c.stoploss_guard_lock_candles
                self.global_lock_reason = (
                    f"stop-loss guard: {len(s)} stop-losses in {c.stoploss_guard_lookback_candles}"
                    " candles"
                )
                s.clear()
                out.append(
                    f"{self.global_lock_reason}; entries locked for "
                    f"{c.stoploss_guard_lock_candles} candles"
                )
        return out

    def entry_block(self, symbol: str, candle: int) -> str | None:
        if self.manual_kill:
            return "manual kill"
        if candle < self.global_lock_until:
            return self.global_lock_reason
        until = self.symbol_lock_until.get(symbol)
        if until is not None and candle < until:
            return f"cooldown after exit until candle {until}"
        return None

    def apply(self, decision: Decision, symbol: str, current: int, candle: int) -> Decision:
        """The decision with protections applied: a manual kill keeps everything as it is (no
        orders; reason "kill switch: manual kill ..."); a lock turns a new entry or flip into
        flat (exits still happen; reason "protection: <the lock>")."""
        if self.manual_kill:
            return Decision(
                current,
                decision.confidence,
                decision.size_fraction,
                "kill switch: manual kill (no new orders)",
                decision.probabilities,
            )
        if decision.signal in (0, current):
            return decision
        why = self.entry_block(symbol, candle)
        if why is None:
            return decision
        return Decision(
            0,
            decision.confidence,
            decision.size_fraction,
            f"protection: {why}",
            decision.probabilities,
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "global_lock_until": self.global_lock_until,
            "global_lock_reason": self.global_lock_reason,
            "symbol_lock_until": dict(self.symbol_lock_until),
            "stoploss_candles": list(self.stoploss_candles),
            "equity_window": [list(x) for x in self.equity_window],
        }

    def load(self, data: dict[str, object]) -> None:
        self.global_lock_until = int(data["global_lock_until"])  # type: ignore[call-overload]
        self.global_lock_reason = str(data["global_lock_reason"])
        self.symbol_lock_until = {k: int(v) for k, v in data["symbol_lock_until"].items()}  # type: ignore[attr-defined]
        self.stoploss_candles = deque(int(x) for x in data["stoploss_candles"])  # type: ignore[attr-defined]
        self.equity_window = deque()
        for a, b in data["equity_window"]:  # type: ignore[attr-defined]
            # a state saved with the whole window (older versions) becomes the monotonic queue
            while self.equity_window and self.equity_window[-1][1] <= float(b):
                self.equity_window.pop()
            self.equity_window.append((int(a), float(b)))
