"""Figures: validation curves from TensorBoard logs, and cost against canvas size from the benchmark.

    python -m glimpse.plots runs/mnist-hard/version_0 runs/mnist-soft/version_0 --out docs/figures/mnist.png
    python -m glimpse.bench --canvas 60 100 200 --json cost.json && python -m glimpse.plots --cost cost.json --out cost.png
    python -m glimpse.plots runs/mnist-hard/version_0 --reach 0.012     # time to 1.2 % validation error
"""

from __future__ import annotations

import argparse
import bisect
import json
import sys
from pathlib import Path

import matplotlib
import matplotlib.ticker
import numpy

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from glimpse.checks import ConfigError, require_writable_file  # noqa: E402


def scalars(run: Path, tag: str) -> tuple[list, EventAccumulator]:
    """The points of a scalar tag in one run folder, and the loaded log (for its other tags)."""
    if not run.is_dir():
        raise ConfigError(f"{run}: no such folder (expected a run folder with TensorBoard event files)")
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()["scalars"]
    if tag not in tags:
        has = f"has {', '.join(sorted(tags))}" if tags else "no TensorBoard scalars there"
        raise ConfigError(f"{run}: no scalar {tag!r} ({has})")
    return events.Scalars(tag), events


def curve(run: Path, tag: str) -> tuple[list[int], list[float], list[float]]:
    """(epochs 1.., values, minutes) of a scalar tag in one run folder. Minutes count from the run's first
    logged scalar (the first training log, a few dozen steps in), not from the tag's first point: a soft
    epoch can take minutes, and its first validation is no zero hour."""
    points, events = scalars(run, tag)
    start = min(events.Scalars(t)[0].wall_time for t in events.Tags()["scalars"])
    return epochs_of(points, events), [p.value for p in points], [(p.wall_time - start) / 60 for p in points]


def epochs_of(points: list, events: EventAccumulator) -> list[int]:
    """The epoch (1..) of each point. Lightning logs an ``epoch`` scalar beside every metric, so a run that
    validates every n-th epoch (``--trainer.check_val_every_n_epoch``) is drawn at its real epochs; a log
    without that scalar counts its points."""
    if "epoch" not in events.Tags()["scalars"]:
        return list(range(1, len(points) + 1))
    at = {e.step: int(e.value) + 1 for e in events.Scalars("epoch")}
    steps = sorted(at)
    return [at[steps[max(0, bisect.bisect_right(steps, p.step) - 1)]] for p in points]  # the last epoch logged at or before


def time_to(run: Path, tag: str, threshold: float) -> str:
    """When a run's ``tag`` first fell to ``threshold`` or below: epoch, and minutes as in ``curve``;
    or its best value if never."""
    epochs, values, minutes = curve(run, tag)
    limit = float(numpy.float32(threshold))  # logs keep float32: 60 errors in 5,000 read back a hair above 0.012
    for epoch, value, minute in zip(epochs, values, minutes):
        if value <= limit:
            return f"{run}: {tag} <= {threshold:g} at epoch {epoch}, {minute:.1f} min"
    best = min(range(len(values)), key=values.__getitem__)
    return (f"{run}: {tag} never <= {threshold:g} in {epochs[-1]} epochs "
            f"({minutes[-1]:.1f} min); best {values[best]:.4g} at epoch {epochs[best]}")


COST_KEYS = ("kind", "canvas", "pixels", "train_img_s")  # what the cost figure reads from each bench row


def read_cost(path: Path) -> list[dict]:
    """The rows of a ``python -m glimpse.bench --json`` file; any other file is refused in one line."""
    try:
        rows = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path}: not a JSON file ({exc})") from exc
    if isinstance(rows, dict):  # the bench names its machine and command beside the rows
        rows = rows.get("rows")
    if not (isinstance(rows, list) and rows and all(isinstance(r, dict) and set(COST_KEYS) <= set(r) for r in rows)):
        raise ConfigError(f"{path}: not a `python -m glimpse.bench --json` file (rows with {', '.join(COST_KEYS)})")
    return rows


def cost_figure(rows: list[dict]):
    """Pixels read and training time per image against the canvas side, one line per kind."""
    fig, (pixels, seconds) = plt.subplots(1, 2, figsize=(11, 4))
    for kind in dict.fromkeys(r["kind"] for r in rows):
        mine = sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["canvas"])
        canvas = [r["canvas"] for r in mine]
        pixels.plot(canvas, [r["pixels"] for r in mine], "o-", label=kind)
        seconds.plot(canvas, [1e3 / r["train_img_s"] for r in mine], "o-", label=kind)
    pixels.set(xlabel="canvas side (pixels)", ylabel="pixels read per image", yscale="log")
    seconds.set(xlabel="canvas side (pixels)", ylabel="training ms per image", yscale="log")
    pixels.legend()
    for ax in (pixels, seconds):
        ax.grid(True, which="both", alpha=0.3)
    return fig


def curves_figure(runs: list[Path], tag: str):
    """Validation error against epoch and against wall-clock minutes, one line per run."""
    fig, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for run in runs:
        epochs, values, minutes = curve(run, tag)
        label = f"{run.parent.name}/{run.name}"
        by_epoch.plot(epochs, [100 * v for v in values], label=label)
        by_time.plot(minutes, [100 * v for v in values], label=label)
    by_epoch.set(xlabel="epoch", ylabel=f"{tag} (%)", yscale="log")
    by_epoch.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))  # 2, not 2x10^0
    by_epoch.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    by_time.set(xlabel="wall-clock minutes (from the first training log)")
    by_epoch.legend()
    for ax in (by_epoch, by_time):
        ax.grid(True, which="both", alpha=0.3)
    return fig


def main(argv: list[str] | None = None) -> None:
    """Bad arguments, an unwritable --out, a missing tag or an unreadable file: one line and exit status 2."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run folders (runs/<name>/version_N)")
    parser.add_argument("--tag", default="val/error")
    parser.add_argument("--cost", type=Path, help="instead of runs: a `python -m glimpse.bench --canvas ... --json` file")
    parser.add_argument("--reach", type=float, help="with runs: print when each first had tag <= this value")
    parser.add_argument("--out", type=Path, help="PNG file to write")
    args = parser.parse_args(argv)
    if bool(args.runs) == bool(args.cost):
        parser.error("give either run folders or --cost FILE (one of the two)")
    if args.reach is not None and not args.runs:
        parser.error("--reach needs run folders")
    if args.reach is None and args.out is None:
        parser.error("--out FILE is needed to write a figure")
    try:
        if args.out is not None:
            require_writable_file("--out", args.out)  # before reading logs that may take a while
        for run in args.runs if args.reach is not None else []:
            print(time_to(run, args.tag, args.reach))
        if args.out is None:
            return
        fig = cost_figure(read_cost(args.cost)) if args.cost else curves_figure(args.runs, args.tag)
        fig.tight_layout()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, dpi=110)
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
