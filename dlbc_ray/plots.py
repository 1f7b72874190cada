"""Figures users would rather see than read: accuracy per block, where a round's time went."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.schema.rounds import RoundReport


def time_split(report: RoundReport) -> tuple[float, float, float]:
    """(training, evaluation, everything else) in seconds for one round."""
    train = report.timings.get("train_s", 0.0)
    evaluate = report.timings.get("eval_ms", 0.0) / 1e3
    return train, evaluate, max(0.0, report.round_seconds - train - evaluate)


def plot_rounds(reports: Sequence[RoundReport], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in reports if r.committed and r.height is not None]
    heights = [r.height for r in done]
    fig, (acc, secs) = plt.subplots(1, 2, figsize=(10, 3.8))
    acc.plot(heights, [(r.score or 0) / SCORE_SCALE for r in done], marker="o")
    acc.set(title="winning test accuracy per block", xlabel="block height", ylabel="accuracy")
    splits = [time_split(r) for r in done]
    bottom = [0.0] * len(done)
    for i, label in enumerate(("training", "evaluation", "protocol + scheduling")):
        part = [s[i] for s in splits]
        secs.bar(heights, part, bottom=bottom, label=label)
        bottom = [b + p for b, p in zip(bottom, part)]
    secs.set(title="where each round's time went", xlabel="block height", ylabel="seconds")
    secs.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
