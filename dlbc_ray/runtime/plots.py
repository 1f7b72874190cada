"""Figures users would rather see than read: accuracy per block, where a round's time went."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.schema.round_messages import RoundReport


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
    return save_figure(fig, path, acc, secs)


def save_figure(fig: Any, path: Path, *height_axes: Any) -> Path:
    """Whole-number ticks on the block-height axes (no 1.25), then the figure laid out, written to ``path``
    (its folder made) and closed."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    for ax in height_axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pole_points(chain: Any) -> list[tuple[int, float, float]]:
    """(height, seconds since the parent block, difficulty) of every standing-task block."""
    from dlbc_ray.ledger.chain import Chain

    assert isinstance(chain, Chain)
    headers = chain.headers()
    standing = {t for t, r in chain.state.tasks.items() if r.task.kind == "standing"}
    return [(h.height, (h.timestamp_ms - parent.timestamp_ms) / 1e3, (h.difficulty or 0) / SCORE_SCALE)
            for parent, h in zip(headers, headers[1:]) if h.task_id in standing]


def plot_pole(points: Sequence[tuple[int, float, float]], target_interval_s: float, path: Path) -> Path:
    """Block intervals against their target, and the difficulty that steers them, over height."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heights = [p[0] for p in points]
    fig, (interval, difficulty) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    interval.plot(heights, [p[1] for p in points], marker="o", label="block interval")
    interval.axhline(target_interval_s, color="gray", linestyle="--", label="target interval")
    interval.set(title="PoLe: block intervals", ylabel="seconds")
    interval.legend()
    difficulty.step(heights, [p[2] for p in points], where="mid", color="tab:red")
    difficulty.set(title="difficulty (accuracy target of the standing task)", xlabel="block height",
                   ylabel="accuracy")
    return save_figure(fig, path, interval, difficulty)
