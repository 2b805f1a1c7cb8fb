"""Validation curves from TensorBoard logs: error against epoch and against wall-clock time.

    python -m glimpse.plots runs/mnist-hard/version_0 runs/mnist-soft/version_0 --out docs/figures/mnist.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def curve(run: Path, tag: str) -> tuple[list[int], list[float], list[float]]:
    """(epochs 1.., values, minutes since the first point) of a scalar tag in one run folder."""
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    if tag not in events.Tags()["scalars"]:
        raise SystemExit(f"{run}: no scalar {tag!r} (has {', '.join(sorted(events.Tags()['scalars']))})")
    points = events.Scalars(tag)
    start = points[0].wall_time
    return list(range(1, len(points) + 1)), [p.value for p in points], [(p.wall_time - start) / 60 for p in points]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (runs/<name>/version_N)")
    parser.add_argument("--tag", default="val/error")
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    args = parser.parse_args(argv)
    fig, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for run in args.runs:
        epochs, values, minutes = curve(run, args.tag)
        label = f"{run.parent.name}/{run.name}"
        by_epoch.plot(epochs, [100 * v for v in values], label=label)
        by_time.plot(minutes, [100 * v for v in values], label=label)
    by_epoch.set(xlabel="epoch", ylabel=f"{args.tag} (%)", yscale="log")
    by_time.set(xlabel="wall-clock minutes (from the first validation)")
    by_epoch.legend()
    for ax in (by_epoch, by_time):
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
