"""Write benchmarks/traces/bursty.csv: one hour of bursty batch work, deterministically (seed 7).

Shape: a trickle of short tasks (one every ~40 s, 2-10 s each) and, every 3-12 minutes, a burst
of 20-80 tasks arriving within ~10 s whose durations are long-tailed (median ~12 s, some
minutes). Quiet gaps longer than a 60 s grace period but shorter than KEDA's 300 s cooldown and
longer ones both occur, which is where the policies differ.

    python benchmarks/traces/make_bursty.py   # rewrites bursty.csv next to this script
"""

from __future__ import annotations

import random
from pathlib import Path

SEED, HOUR = 7, 3600.0


def make(seed: int = SEED, length: float = HOUR) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    rows: list[tuple[float, float]] = []
    t = 0.0
    while (t := t + rng.expovariate(1 / 40)) < length:  # background trickle
        rows.append((t, rng.uniform(2, 10)))
    t = 60.0
    while t < length - 120:  # bursts
        size = rng.randint(20, 80)
        for _ in range(size):
            rows.append((t + rng.uniform(0, 10), min(rng.lognormvariate(2.5, 0.8), 300.0)))
        t += rng.uniform(180, 720)
    return sorted((round(a, 3), round(d, 3)) for a, d in rows)


def main() -> None:
    out = Path(__file__).with_name("bursty.csv")
    rows = make()
    out.write_text("arrival,duration\n" + "".join(f"{a},{d}\n" for a, d in rows))
    print(f"wrote {out} ({len(rows)} tasks, {sum(d for _, d in rows):,.0f} task-seconds)")


if __name__ == "__main__":
    main()
