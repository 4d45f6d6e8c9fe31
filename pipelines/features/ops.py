"""The operators of the feature graph, each implemented twice: vectorised (polars) and online.

Every operator has a batch form ``batch_<op>(node, args, seg) -> pl.Expr`` and an online form
``online_<op>(node) -> step`` where ``step(*values)`` is called once per candle with the
current values of the node's inputs (``None`` = null) and returns the node's value. Online
state is O(window) memory and O(1) work per candle.

Shared semantics (both forms):
- Windowed operators (shift, diff, sum, sma, std) are null until ``window`` candles of the
  current segment are in the window and null while any input in the window is null.
- Recursive operators (ema: alpha = 2/(n+1); wilder: alpha = 1/n) are seeded with the simple
  mean of the first n inputs, then ``y = (1 - alpha) * y + alpha * x``; a null input restarts
  them (null until n new inputs).
- Division-like operators return null when the denominator is (numerically) zero.
- ``trend(ret, vol)`` (the regime label) is a state with hysteresis: 1 once ``ret`` rises above
  ``param * vol``, -1 once it falls below minus that, 0 once ``|ret|`` is back within half of
  it; in between it keeps the last state (null until the first of these). A null input gives
  null and keeps the state; a segment restart (long gap) forgets it.
- Online rolling sums are kept as running sums and recomputed exactly from the ring buffer
  once every ``window`` candles (amortised O(1), bounded rounding drift); rolling variance is
  kept as sums of deviations from a reference value that is reset to a recent input at each
  exact recompute (no catastrophic cancellation); windows whose inputs are all identical
  give exactly 0 variance (and exactly 0 sum for zeros), as polars does.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import polars as pl

from pipelines.features.spec import Node

Step = Callable[..., float | None]
TWO_PI_PER_DAY_HOURS = 2.0 * math.pi / 24.0
TWO_PI_PER_WEEK_DAYS = 2.0 * math.pi / 7.0
ZSCORE_MIN_STD_FRACTION = 1e-9


def _w(node: Node) -> int:
    if node.window is None or node.window < 1:
        raise ValueError(f"feature node {node.name!r} ({node.op}) needs a window >= 1")
    return node.window


def _p(node: Node) -> float:
    if node.param is None:
        raise ValueError(f"feature node {node.name!r} ({node.op}) needs a param")
    return node.param


# --------------------------------------------------------------------------- batch (polars)


def batch_expr(node: Node, args: list[pl.Expr], seg: pl.Expr) -> pl.Expr:
    """The polars expression of ``node`` given its input columns and the segment id column."""
    x = args[0] if args else None
    op = node.op
    if op == "copy":
        return x  # type: ignore[return-value]
    if op == "log":
        return pl.when(x > 0).then(x.log())  # type: ignore[union-attr,operator]
    if op == "abs":
        return x.abs()  # type: ignore[union-attr]
    if op == "pos":
        return x.clip(lower_bound=0.0)  # type: ignore[union-attr]
    if op == "negpart":
        return (-x).clip(lower_bound=0.0)  # type: ignore[operator]
    if op == "shift":
        return x.shift(_w(node)).over(seg)  # type: ignore[union-attr]
    if op == "diff":
        return x - x.shift(_w(node)).over(seg)  # type: ignore[union-attr]
    if op == "sum":
        return x.rolling_sum(_w(node)).over(seg)  # type: ignore[union-attr]
    if op == "sma":
        return x.rolling_mean(_w(node)).over(seg)  # type: ignore[union-attr]
    if op == "std":
        return x.rolling_std(_w(node), ddof=1).over(seg)  # type: ignore[union-attr]
    if op in ("ema", "wilder"):
        n = _w(node)
        alpha = 2.0 / (n + 1.0) if op == "ema" else 1.0 / n
        sm = x.rolling_mean(n).over(seg)  # type: ignore[union-attr]
        first = sm.is_not_null() & sm.shift(1).over(seg).is_null()
        seeded = pl.when(first).then(sm).when(sm.is_not_null()).then(x)
        return seeded.ewm_mean(alpha=alpha, adjust=False).over(seg, x.is_null().cum_sum())  # type: ignore[union-attr]
    if op == "sub":
        return args[0] - args[1]
    if op == "add":
        return args[0] + args[1] if len(args) == 2 else args[0] + _p(node)
    if op == "ratio_m1":
        return pl.when(args[1] != 0).then(args[0] / args[1] - 1.0)
    if op == "div":
        return pl.when(args[1].abs() > _p(node)).then(args[0] / args[1])
    if op == "zscore":
        v, m, s = args
        ok = (s > 0.0) & (s > ZSCORE_MIN_STD_FRACTION * m.abs())
        return pl.when(ok).then((v - m) / (_p(node) * s))
    if op == "rsi":
        g, lo = args
        return (
            pl.when(g.is_null() | lo.is_null())
            .then(None)
            .when(lo == 0.0)
            .then(pl.when(g > 0.0).then(100.0).otherwise(50.0))
            .otherwise(100.0 - 100.0 / (1.0 + g / lo))
        )
    if op == "lt":
        return (x < _p(node)).cast(pl.Float64)  # type: ignore[operator,union-attr]
    if op == "gt":
        return (x > _p(node)).cast(pl.Float64)  # type: ignore[operator,union-attr]
    if op == "regime":
        er, r = args
        th = _p(node)
        return (
            pl.when(er.is_null() | r.is_null())
            .then(None)
            .when((er > th) & (r > 0.0))
            .then(1.0)
            .when((er > th) & (r < 0.0))
            .then(-1.0)
            .otherwise(0.0)
        )
    if op == "trend":
        ret, vol = args
        band = _p(node) * vol
        event = (
            pl.when(ret > band)
            .then(1.0)
            .when(ret < -band)
            .then(-1.0)
            .when(ret.abs() <= band * 0.5)
            .then(0.0)
        )
        state = event.forward_fill().over(seg)
        return pl.when(ret.is_null() | vol.is_null()).then(None).otherwise(state)
    if op == "rsi_x":
        return (args[0] - 50.0) / 50.0 * args[1]
    if op in ("hour", "dow", "weekend", "hoursin", "hourcos", "dowsin", "dowcos"):
        hour = x.dt.hour().cast(pl.Float64)  # type: ignore[union-attr]
        frac_hour = hour + x.dt.minute().cast(pl.Float64) / 60.0  # type: ignore[union-attr]
        dow = (x.dt.weekday() - 1).cast(pl.Float64)  # type: ignore[union-attr]
        return {
            "hour": hour,
            "dow": dow,
            "weekend": (dow >= 5.0).cast(pl.Float64),
            "hoursin": (frac_hour * TWO_PI_PER_DAY_HOURS).sin(),
            "hourcos": (frac_hour * TWO_PI_PER_DAY_HOURS).cos(),
            "dowsin": (dow * TWO_PI_PER_WEEK_DAYS).sin(),
            "dowcos": (dow * TWO_PI_PER_WEEK_DAYS).cos(),
        }[op]
    raise ValueError(f"feature node {node.name!r}: unknown operator {op!r}")


# --------------------------------------------------------------------------- online (O(1))


def online_step(node: Node) -> Step:
    """A fresh stateful step function for ``node`` (state starts empty)."""
    factory = _ONLINE.get(node.op)
    if factory is None:
        raise ValueError(f"feature node {node.name!r}: unknown operator {node.op!r}")
    return factory(node)


def _copy(node: Node) -> Step:
    return lambda x: x


def _log(node: Node) -> Step:
    log = math.log
    return lambda x: None if x is None or x <= 0.0 else log(x)


def _abs(node: Node) -> Step:
    return lambda x: None if x is None else abs(x)


def _pos(node: Node) -> Step:
    return lambda x: None if x is None else (x if x > 0.0 else 0.0)


def _negpart(node: Node) -> Step:
    return lambda x: None if x is None else (-x if x < 0.0 else 0.0)


def _shift(node: Node) -> Step:
    n = _w(node)
    buf: list[float | None] = [None] * n
    pos = 0

    def step(x: float | None) -> float | None:
        nonlocal pos
        old = buf[pos]
        buf[pos] = x
        pos = pos + 1 if pos + 1 < n else 0
        return old

    return step


def _diff(node: Node) -> Step:
    shift = _shift(node)

    def step(x: float | None) -> float | None:
        old = shift(x)
        return None if old is None or x is None else x - old

    return step


class _Window:
    """Ring buffer with a running sum, a null count and a run of identical values."""

    __slots__ = ("buf", "n", "pos", "nulls", "total", "run", "last", "since_exact")

    def __init__(self, n: int) -> None:
        self.buf: list[float | None] = [None] * n
        self.n = n
        self.pos = 0
        self.nulls = n
        self.total = 0.0
        self.run = 0
        self.last: float | None = None
        self.since_exact = 0


def _sum_like(node: Node, mean: bool) -> Step:
    n = _w(node)
    w = _Window(n)
    buf = w.buf

    def step(x: float | None) -> float | None:
        pos = w.pos
        old = buf[pos]
        buf[pos] = x
        w.pos = pos + 1 if pos + 1 < n else 0
        if old is None:
            w.nulls -= 1
        else:
            w.total -= old
        if x is None:
            w.nulls += 1
            w.run = 0
        else:
            w.total += x
            w.run = w.run + 1 if x == w.last else 1
        w.last = x
        w.since_exact += 1
        if w.since_exact >= n:  # exact recompute, oldest first: amortised O(1)
            w.since_exact = 0
            if w.nulls == 0:
                total = 0.0
                p = w.pos
                for i in range(n):
                    total += buf[(p + i) % n]  # type: ignore[operator]
                w.total = total
        if w.nulls:
            return None
        if w.run >= n and x == 0.0:
            return 0.0
        return w.total / n if mean else w.total

    return step


def _sum(node: Node) -> Step:
    return _sum_like(node, mean=False)


def _sma(node: Node) -> Step:
    return _sum_like(node, mean=True)


def _std(node: Node) -> Step:
    n = _w(node)
    buf: list[float | None] = [None] * n
    st = {
        "pos": 0,
        "nulls": n,
        "s1": 0.0,
        "s2": 0.0,
        "ref": 0.0,
        "run": 0,
        "last": None,
        "since": 0,
    }
    sqrt = math.sqrt

    def recompute() -> None:
        ref = st["ref"] = buf[(int(st["pos"]) - 1) % n]  # type: ignore[arg-type]
        s1 = s2 = 0.0
        for v in buf:
            d = v - ref  # type: ignore[operator]
            s1 += d
            s2 += d * d
        st["s1"], st["s2"] = s1, s2

    def step(x: float | None) -> float | None:
        pos: int = st["pos"]  # type: ignore[assignment]
        old = buf[pos]
        buf[pos] = x
        st["pos"] = pos + 1 if pos + 1 < n else 0
        ref: float = st["ref"]  # type: ignore[assignment]
        if old is None:
            st["nulls"] -= 1  # type: ignore[operator]
        else:
            d = old - ref
            st["s1"] -= d  # type: ignore[operator]
            st["s2"] -= d * d  # type: ignore[operator]
        if x is None:
            st["nulls"] += 1  # type: ignore[operator]
            st["run"] = 0
        else:
            d = x - ref
            st["s1"] += d  # type: ignore[operator]
            st["s2"] += d * d  # type: ignore[operator]
            st["run"] = st["run"] + 1 if x == st["last"] else 1  # type: ignore[operator]
        st["last"] = x
        st["since"] += 1  # type: ignore[operator]
        if st["nulls"]:
            return None
        if st["since"] >= n:  # type: ignore[operator]
            st["since"] = 0
            recompute()
        if st["run"] >= n:  # type: ignore[operator]
            return 0.0
        s1: float = st["s1"]  # type: ignore[assignment]
        var = (st["s2"] - s1 * s1 / n) / (n - 1)  # type: ignore[operator]
        return sqrt(var) if var > 0.0 else 0.0

    return step


def _recursive(node: Node, alpha: float) -> Step:
    n = _w(node)
    one_minus = 1.0 - alpha
    st = {"count": 0, "acc": 0.0, "y": 0.0}
    seed_window = _sum_like(Node(node.name, "sma", node.inputs, n), mean=True)

    def step(x: float | None) -> float | None:
        sm = seed_window(x)
        if x is None:
            st["count"] = 0
            return None
        st["count"] += 1
        if st["count"] < n:
            return None
        if st["count"] == n:
            st["y"] = sm  # type: ignore[assignment]
            return sm
        y = one_minus * st["y"] + alpha * x
        st["y"] = y
        return y

    return step


def _ema(node: Node) -> Step:
    return _recursive(node, 2.0 / (_w(node) + 1.0))


def _wilder(node: Node) -> Step:
    return _recursive(node, 1.0 / _w(node))


def _sub(node: Node) -> Step:
    return lambda a, b: None if a is None or b is None else a - b


def _add(node: Node) -> Step:
    if len(node.inputs) == 2:
        return lambda a, b: None if a is None or b is None else a + b
    c = _p(node)
    return lambda a: None if a is None else a + c


def _ratio_m1(node: Node) -> Step:
    return lambda a, b: None if a is None or b is None or b == 0.0 else a / b - 1.0


def _div(node: Node) -> Step:
    eps = _p(node)
    return lambda a, b: None if a is None or b is None or not abs(b) > eps else a / b


def _zscore(node: Node) -> Step:
    scale = _p(node)
    frac = ZSCORE_MIN_STD_FRACTION

    def step(v: float | None, m: float | None, s: float | None) -> float | None:
        if v is None or m is None or s is None or not (s > 0.0 and s > frac * abs(m)):
            return None
        return (v - m) / (scale * s)

    return step


def _rsi(node: Node) -> Step:
    def step(g: float | None, lo: float | None) -> float | None:
        if g is None or lo is None:
            return None
        if lo == 0.0:
            return 100.0 if g > 0.0 else 50.0
        return 100.0 - 100.0 / (1.0 + g / lo)

    return step


def _lt(node: Node) -> Step:
    c = _p(node)
    return lambda x: None if x is None else (1.0 if x < c else 0.0)


def _gt(node: Node) -> Step:
    c = _p(node)
    return lambda x: None if x is None else (1.0 if x > c else 0.0)


def _regime(node: Node) -> Step:
    th = _p(node)

    def step(er: float | None, r: float | None) -> float | None:
        if er is None or r is None:
            return None
        if er > th and r > 0.0:
            return 1.0
        if er > th and r < 0.0:
            return -1.0
        return 0.0

    return step


def _trend(node: Node) -> Step:
    k = _p(node)
    state: list[float | None] = [None]

    def step(ret: float | None, vol: float | None) -> float | None:
        if ret is None or vol is None:
            return None
        band = k * vol
        if ret > band:
            state[0] = 1.0
        elif ret < -band:
            state[0] = -1.0
        elif abs(ret) <= band * 0.5:
            state[0] = 0.0
        return state[0]

    return step


def _rsi_x(node: Node) -> Step:
    return lambda r, ob: None if r is None or ob is None else (r - 50.0) / 50.0 * ob


def _time(node: Node) -> Step:
    op = node.op

    def step(ts_ms: int) -> float:
        hour = float(ts_ms // 3_600_000 % 24)
        if op == "hour":
            return hour
        dow = float((ts_ms // 86_400_000 + 3) % 7)  # 1970-01-01 was a Thursday
        if op == "dow":
            return dow
        if op == "weekend":
            return 1.0 if dow >= 5.0 else 0.0
        if op in ("hoursin", "hourcos"):
            a = (hour + float(ts_ms // 60_000 % 60) / 60.0) * TWO_PI_PER_DAY_HOURS
            return math.sin(a) if op == "hoursin" else math.cos(a)
        a = dow * TWO_PI_PER_WEEK_DAYS
        return math.sin(a) if op == "dowsin" else math.cos(a)

    return step


_ONLINE: dict[str, Callable[[Node], Step]] = {
    "copy": _copy,
    "log": _log,
    "abs": _abs,
    "pos": _pos,
    "negpart": _negpart,
    "shift": _shift,
    "diff": _diff,
    "sum": _sum,
    "sma": _sma,
    "std": _std,
    "ema": _ema,
    "wilder": _wilder,
    "sub": _sub,
    "add": _add,
    "ratio_m1": _ratio_m1,
    "div": _div,
    "zscore": _zscore,
    "rsi": _rsi,
    "lt": _lt,
    "gt": _gt,
    "regime": _regime,
    "trend": _trend,
    "rsi_x": _rsi_x,
    **{t: _time for t in ("hour", "dow", "weekend", "hoursin", "hourcos", "dowsin", "dowcos")},
}
