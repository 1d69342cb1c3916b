"""Timing that can be believed on a shared machine: long samples, interleaved cases, median and spread.

``compare({"a": fn_a, "b": fn_b}, repeats=5, min_seconds=0.5)``:

1. every case runs once (warm-up: allocator, oneDNN primitive caches, lazy imports);
2. each case gets a loop count so that one *sample* (``loops`` calls timed together) lasts at least
   ``min_seconds``: a sample is never a single short call whose time is mostly timer and scheduler noise;
3. the samples are interleaved, ``a b a b ...`` (the order rotates each round), so a slow period of the
   machine (other processes on shared cores) hits every case alike instead of whichever ran then;
4. per case: the median seconds per call and the spread, the interquartile range and min-max over the
   samples, for wall-clock and process CPU time.

Ratios of two cases (:func:`ratio`) are taken sample by sample within a round (the two were timed next to
each other), and their median and min-max reported.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field


@dataclass
class Timing:
    """Seconds per call of one case: one value per sample (``loops`` calls each)."""

    loops: int
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @staticmethod
    def _quartiles(values):
        if len(values) < 2:
            return values[0], values[0]
        q = statistics.quantiles(values, n=4, method="inclusive")
        return q[0], q[2]

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    def spread(self, cpu: bool = False) -> str:
        values = self.cpu if cpu else self.wall
        lo, hi = self._quartiles(values)
        return f"IQR {lo:.4g}-{hi:.4g}, min-max {min(values):.4g}-{max(values):.4g}"


def _sample(fn, loops: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(loops):
        fn()
    return (time.perf_counter() - wall) / loops, (time.process_time() - cpu) / loops


def compare(cases: dict, repeats: int = 5, min_seconds: float = 0.5, max_loops: int = 10_000) -> dict[str, Timing]:
    """Interleaved timings of every case (name -> no-argument callable), see the module docstring."""
    timings = {}
    for name, fn in cases.items():
        wall, _ = _sample(fn, 1)  # warm-up, and a first estimate of one call's time
        loops = 1
        while wall * loops < min_seconds and loops < max_loops:
            loops = min(max_loops, max(loops + 1, int(loops * min_seconds / max(wall * loops, 1e-9) * 1.2)))
            wall, _ = _sample(fn, loops)
        timings[name] = Timing(loops)
    names = list(cases)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            wall, cpu = _sample(cases[name], timings[name].loops)
            timings[name].wall.append(wall)
            timings[name].cpu.append(cpu)
    return timings


def ratio(timings: dict[str, Timing], numerator: str, denominator: str, scale: float = 1.0,
          cpu: bool = False) -> tuple[float, float, float]:
    """(median, min, max) over rounds of numerator / denominator / scale, each round's pair timed side by side."""
    a = timings[numerator].cpu if cpu else timings[numerator].wall
    b = timings[denominator].cpu if cpu else timings[denominator].wall
    values = [x / y / scale for x, y in zip(a, b)]
    return statistics.median(values), min(values), max(values)


def describe(name: str, timing: Timing, per: float = 1.0, unit: str = "ms", factor: float = 1e3) -> str:
    """One line: the case's median time per ``per`` items with the wall-clock spread, and the loop count."""
    lo, hi = Timing._quartiles([w / per for w in timing.wall])
    return (f"{name:34s} {factor * timing.median / per:9.3f} {unit} (IQR {factor * lo:.3f}-{factor * hi:.3f}, "
            f"min-max {factor * min(timing.wall) / per:.3f}-{factor * max(timing.wall) / per:.3f}; "
            f"CPU {factor * timing.cpu_median / per:.3f}; {len(timing.wall)} samples x {timing.loops} calls)")
