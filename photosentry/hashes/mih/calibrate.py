"""Pick the layout that measures fastest on this host, not the one the cost model prefers.

The cost model (plan.py) was fitted on two development hosts. On another CPU, or with
other tenants filling the caches, its ranking of close layouts can be wrong: at 10M PDQ
entries it chose ``dir=21`` (1.65 ms a photo) where ``dir=20`` measured 1.29 ms in the
same run (issue #19). The model is good at discarding layouts and poor at ordering the
last few, so a calibration times those few on the host, over the real entries:

- candidates: the model's best layout of each shape (substring count and directory
  bits for packed tables; substring count, kind and widest table for inline ones),
  the ``MAX_CANDIDATES`` cheapest shapes within ``WITHIN`` of the model's best;
- each one is built over the bank's own codes at its full size (a sample would change
  exactly what separates them: how much of the directories the caches hold), and timed
  against the current best on the same random queries, alternating query by query so
  drift from other work on the host hits both alike; the faster median stays;
- the winner's segment is returned, so the build that is kept is not repeated, and the
  decision is cached per host (:class:`CalibrationCache`, a JSON file in the data
  directory keyed by CPU, kernel build and bank size class), so later builds of a bank
  of about the same size on this host skip the timing.

Costs at build time: one extra segment build per candidate beyond the first (about
0.2 s at 1M PDQ entries, 2 s at 10M) and ``BUDGET_S`` of queries per comparison. So the
shared index (hostindex.py) calibrates in the background and swaps the result in,
never on the way to a first verdict.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import simd
from .plan import Layout, ranked_layouts
from .segment import MihSegment

log = logging.getLogger(__name__)

#: Shapes timed at most (the model's best of each).
MAX_CANDIDATES = 4
#: Shapes the model puts within this factor of its best are timed.
WITHIN = 1.35
#: Seconds of queries per comparison (both layouts together).
BUDGET_S = 0.3
#: Rows below which the layout hardly matters (a query costs tens of microseconds) and
#: the model decides alone.
MIN_ROWS = 200_000
#: Query variants per timed query (a photo's PDQ and pHash variants).
VARIANTS = 8


@dataclass(frozen=True)
class Calibration:
    """What a calibration measured and chose."""

    layout: Layout
    #: Median microseconds per query of ``VARIANTS`` variants, by layout description.
    measured_us: dict[str, float] = field(default_factory=dict)
    #: The cost model's own pick.
    model_pick: str = ""
    #: Seconds the calibration took (builds and queries).
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {"layout": self.layout.to_dict(), "measured_us": self.measured_us, "model_pick": self.model_pick,
                "seconds": round(self.seconds, 3), "at": int(time.time())}

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> "Calibration":
        return cls(Layout.from_dict(raw["layout"]),  # type: ignore[arg-type]
                   {str(k): float(v) for k, v in dict(raw.get("measured_us") or {}).items()},  # type: ignore[call-overload]
                   str(raw.get("model_pick", "")), float(raw.get("seconds", 0.0)))  # type: ignore[arg-type]


def shape(layout: Layout) -> tuple[object, ...]:
    """What separates layouts whose speed the model may order wrongly (see the module docstring)."""
    if layout.inline:
        return ("fragment" if layout.fragments else "inline", layout.m, max(w for _, w in layout.substrings))
    return ("packed", layout.m, max(layout.dir_widths))


def candidates(bits: int, radius: int, n: int, *, vector: bool | None = None) -> list[Layout]:
    """The layouts a calibration times, the model's pick first (``vector``: for the vector
    or the scalar scans; default the ones this host runs)."""
    ranked = ranked_layouts(bits, radius, n, vector=vector)
    if not ranked:
        return []
    best_cost = ranked[0][0]
    out: dict[tuple[object, ...], Layout] = {}
    for cost, layout in ranked:
        if cost > WITHIN * best_cost or len(out) == MAX_CANDIDATES:
            break
        out.setdefault(shape(layout), layout)
    return list(out.values())


def calibrate(
    codes: np.ndarray,
    radius: int,
    *,
    layouts: list[Layout] | None = None,
    budget_s: float = BUDGET_S,
    seed: int = 0,
    time_query: Callable[[MihSegment, np.ndarray, int], float] | None = None,
) -> tuple[Calibration, MihSegment]:
    """Time ``layouts`` (default: :func:`candidates`) over ``codes`` and return the
    fastest, with its built segment. ``time_query(segment, queries, radius)``: seconds
    one query takes (default: run it and time it; tests pass their own).

    Raises:
        ValueError: no layout to time (a bank small enough for a linear scan).
    """
    started = time.perf_counter()
    n, words = codes.shape
    bits = words * 64
    layouts = layouts if layouts is not None else candidates(bits, radius, n)
    if not layouts:
        raise ValueError(f"no multi-index layout beats a linear scan for {n} x {bits}-bit codes")
    rng = np.random.default_rng(seed)
    queries = [rng.integers(0, 2**64 - 1, size=(VARIANTS, words), dtype=np.uint64, endpoint=True) for _ in range(64)]
    best = MihSegment(codes, layouts[0])
    measured: dict[str, float] = {}
    for layout in layouts[1:]:
        challenger = MihSegment(codes, layout)
        a, b = _race(best, challenger, queries, radius, budget_s, time_query or _timed)
        measured.setdefault(best.layout.describe(), a)
        measured[layout.describe()] = b
        if b < a:
            best = challenger
        del challenger
    if len(layouts) == 1:
        measured[best.layout.describe()] = _race(best, best, queries, radius, budget_s / 2, time_query or _timed)[0]
    result = Calibration(best.layout, measured, layouts[0].describe(), time.perf_counter() - started)
    return result, best


def _timed(segment: MihSegment, queries: np.ndarray, radius: int) -> float:
    started = time.perf_counter()
    segment.query(queries, radius)
    return time.perf_counter() - started


def _race(a: MihSegment, b: MihSegment, queries: list[np.ndarray], radius: int, budget_s: float,
          time_query: Callable[[MihSegment, np.ndarray, int], float]) -> tuple[float, float]:
    """Median microseconds per query of ``a`` and ``b``, alternating on the same queries."""
    times: tuple[list[float], list[float]] = ([], [])
    for seg in (a, b):  # one untimed query each: first touches of their tables
        seg.query(queries[0], radius)
    spent, i = 0.0, 0
    while (spent < budget_s and i < 4000) or i < 8:
        q = queries[i % len(queries)]
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for k in order:
            dt = time_query((a, b)[k], q, radius)
            times[k].append(dt)
            spent += dt
        i += 1
    return float(np.median(times[0]) * 1e6), float(np.median(times[1]) * 1e6)


def host_key() -> str:
    """Which host's measurements these are: the kernels' cache key (CPU name and
    features, numba, the kernels' source, the scan kind)."""
    from .kernelcache import cache_key

    return cache_key()


def size_class(n: int) -> int:
    """Banks within about 9% of each other's size share a decision (quarter octaves)."""
    return round(4 * math.log2(max(n, 1)))


class CalibrationCache:
    """This host's decisions, one JSON file (``calibration-<host key>.json``) in ``folder``.

    Keyed by bits, radius and size class. A decision naming a layout that is no longer
    a candidate (a changed cost model or budget) is ignored. Writes are atomic (a
    temporary file renamed over the old one); a lost race loses one decision, which the
    next build measures again.
    """

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / f"calibration-{host_key()}.json"

    @staticmethod
    def _key(bits: int, radius: int, n: int) -> str:
        return f"{bits}/{radius}/{size_class(n)}{'v' if simd.VECTOR_SCAN else 's'}"

    def _read(self) -> dict[str, dict[str, object]]:
        try:
            raw = json.loads(self.path.read_text("utf-8"))
            return raw if isinstance(raw, dict) else {}
        except (OSError, ValueError):
            return {}

    def get(self, bits: int, radius: int, n: int) -> Calibration | None:
        raw = self._read().get(self._key(bits, radius, n))
        if not isinstance(raw, dict):
            return None
        try:
            found = Calibration.from_dict(raw)
        except (ValueError, TypeError, KeyError):
            return None
        valid = {layout for _, layout in ranked_layouts(bits, radius, n)}
        return found if found.layout in valid else None

    def put(self, bits: int, radius: int, n: int, calibration: Calibration) -> None:
        data = self._read()
        data[self._key(bits, radius, n)] = calibration.to_dict()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-calibration-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def planned_segment(
    codes: np.ndarray, radius: int, *, cache: CalibrationCache | None, measure: bool
) -> tuple[MihSegment | None, str]:
    """The segment to keep for ``codes``, and how its layout was chosen: "calibrated"
    (timed now), "calibration cached" (timed before on this host), "model" (the cost
    model's pick, to be timed later: see :data:`AWAITING`), "small" (too few rows to
    matter), "uncalibrated" (no cache: the model alone), "linear" (no segment: a linear
    scan is cheaper). ``measure``: calibrate now when this host has no decision for a
    bank of this size.
    """
    n, words = codes.shape
    bits = words * 64
    ranked = ranked_layouts(bits, radius, n)
    if not ranked:
        return None, "linear"
    if cache is None or n < MIN_ROWS:
        return MihSegment(codes, ranked[0][1]), "uncalibrated" if cache is None else "small"
    known = cache.get(bits, radius, n)
    if known is not None:
        return MihSegment(codes, known.layout), "calibration cached"
    if measure:
        result, segment = calibrate(codes, radius)
        try:
            cache.put(bits, radius, n, result)
        except OSError as exc:
            log.warning("could not save the index calibration to %s: %s", cache.path, exc)
        log.info("index calibration for %d x %d-bit codes, radius %d: %s (model: %s; measured %s) in %.1f s",
                 n, bits, radius, result.layout.describe(), result.model_pick,
                 ", ".join(f"{k} {v:.0f} us" for k, v in result.measured_us.items()), result.seconds)
        return segment, "calibrated"
    return MihSegment(codes, ranked[0][1]), AWAITING


#: How planned_segment says a layout is the model's guess, waiting to be timed.
AWAITING = "model"
