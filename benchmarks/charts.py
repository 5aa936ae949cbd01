"""Bar charts for the performance report (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.helpers import ROOT

IMG = ROOT / "docs" / "img"
written: list[Path] = []


def bars(name: str, title: str, groups: dict[str, dict[str, float]], ylabel: str, log: bool = False) -> Path:
    """Grouped bars: one group per key of ``groups``, one bar per series inside it (values labelled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = list(dict.fromkeys(s for g in groups.values() for s in g))
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for i, s in enumerate(series):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ys = [vals.get(s, 0.0) for vals in groups.values()]
        drawn = ax.bar(xs, ys, width, label=s)
        ax.bar_label(drawn, labels=[f"{y:.3g}" for y in ys], fontsize=8)
    ax.set_xticks(range(len(groups)), [textwrap.fill(g, 20) for g in groups], fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = IMG / name
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    written.append(path)
    return path
