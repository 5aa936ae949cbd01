"""The generated traces of the policy sweep (benchmarks/simulate.py), seeded so every run is the same.

Each is ``arrival,duration`` in seconds, like ``bursty.csv`` (which ``make_bursty.py`` writes):

- ``bursts-long`` (seed 11, 2 h): every 4-15 min a burst of 10-60 tasks within 20 s, 20-120 s
  each, over a trickle of 5-30 s tasks; steady duration mix, long tasks.
- ``diurnal`` (seed 3, 4 h): Poisson arrivals whose rate swings from 0.01/s to 0.25/s and back
  twice (a compressed day), lognormal durations (median 10 s).
- ``heavy-tail`` (seed 5, 2 h): Poisson 0.3/s, Pareto durations (alpha 1.5, from 3 s, capped at
  30 min): most tasks are short, a few run for many minutes.
- ``shift`` (seed 13, 2 h): an hour of 3-15 s tasks at 0.4/s, then an hour of 60-240 s tasks at
  one per 30 s: the same busy-worker count, durations 16x longer.

    python benchmarks/traces/make_traces.py   # writes <name>.csv next to this script
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path

Trace = list[tuple[float, float]]


def _poisson(rng: random.Random, rate: Callable[[float], float], peak: float, start: float, end: float, duration: Callable[[], float]) -> Trace:
    """Arrivals of a Poisson process with time-varying ``rate`` (thinning under ``peak``)."""
    out, t = [], start
    while (t := t + rng.expovariate(peak)) < end:
        if rng.random() < rate(t) / peak:
            out.append((t, duration()))
    return out


def bursts_long(seed: int = 11) -> Trace:
    rng = random.Random(seed)
    rows = _poisson(rng, lambda t: 1 / 90, 1 / 90, 0, 7200, lambda: rng.uniform(5, 30))
    t = 120.0
    while t < 7200 - 300:
        rows += [(t + rng.uniform(0, 20), rng.uniform(20, 120)) for _ in range(rng.randint(10, 60))]
        t += rng.uniform(240, 900)
    return rows


def diurnal(seed: int = 3) -> Trace:
    rng = random.Random(seed)
    rate = lambda t: 0.01 + 0.24 * (1 - math.cos(2 * math.pi * t / 7200)) / 2  # noqa: E731
    return _poisson(rng, rate, 0.25, 0, 14400, lambda: min(rng.lognormvariate(math.log(10), 0.7), 600))


def heavy_tail(seed: int = 5) -> Trace:
    rng = random.Random(seed)
    return _poisson(rng, lambda t: 0.3, 0.3, 0, 7200, lambda: min(3 * rng.paretovariate(1.5), 1800))


def shift(seed: int = 13) -> Trace:
    rng = random.Random(seed)
    short = _poisson(rng, lambda t: 0.4, 0.4, 0, 3600, lambda: rng.uniform(3, 15))
    long = _poisson(rng, lambda t: 1 / 30, 1 / 30, 3600, 7200, lambda: rng.uniform(60, 240))
    return short + long


TRACES: dict[str, Callable[[], Trace]] = {"bursts-long": bursts_long, "diurnal": diurnal, "heavy-tail": heavy_tail, "shift": shift}


def make(name: str) -> Trace:
    return sorted((round(a, 3), round(d, 3)) for a, d in TRACES[name]())


def main() -> None:
    for name in TRACES:
        rows = make(name)
        out = Path(__file__).with_name(f"{name}.csv")
        out.write_text("arrival,duration\n" + "".join(f"{a},{d}\n" for a, d in rows))
        print(f"wrote {out} ({len(rows)} tasks, {sum(d for _, d in rows):,.0f} task-seconds)")


if __name__ == "__main__":
    main()
