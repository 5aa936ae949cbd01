"""A stand-in training job: prints progress and log lines, writes a result file.

Usage: ``python train.py [--steps N] [--step-seconds S] [--out model.txt]``. Runs in the
service's storage dir (the task's cwd), so ``--out`` lands there.
"""

from __future__ import annotations

import argparse
import time

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=5)
parser.add_argument("--step-seconds", type=float, default=0.2)
parser.add_argument("--out", default="model.txt")
args = parser.parse_args()

loss = 1.0
for step in range(1, args.steps + 1):
    time.sleep(args.step_seconds)
    loss *= 0.7
    print(f"step {step}/{args.steps} loss={loss:.4f}", flush=True)
    print(f"progress: {100 * step // args.steps}%", flush=True)
with open(args.out, "w") as f:
    f.write(f"final loss {loss:.4f}\n")
print(f"wrote {args.out}", flush=True)
