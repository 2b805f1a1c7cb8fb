"""Evaluate saved checkpoints on the test set, side by side; optionally draw where they looked.

    python -m glimpse.evaluate runs/mnist-hard/version_0/checkpoints/best-*.ckpt runs/mnist-soft/.../last.ckpt
    python -m glimpse.evaluate CKPT --samples 20 --json results.json --trajectories looks.png
    python -m glimpse.evaluate CKPT --samples 1 2 5 10 20     # one row per M: what averaging buys
    python -m glimpse.evaluate CKPT --split val --std 0.3     # choose settings on validation images

Each checkpoint is rebuilt from the hyperparameters saved in it (no config to repeat) and tested on
the data set it was trained on, or on ``--dataset`` (with ``--canvas``/``--fragments``) where the
image size matches. Stochastic models (hard, choice) report the error of M-sample averaged probabilities
and of the greedy (policy-mean) path; the sampling is seeded (``--seed``), so a command gives the same numbers
every time. The errors are the module's own test step (a Trainer's test pass, as every training run ends
with), so this tool and training cannot measure differently. Exit status 2 and one line for a bad file or
argument.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from glimpse.checkpoints import load_model, run_tool, saved_arguments
from glimpse.cli import default_precision, quiet_library_notices
from glimpse.checks import ConfigError, require_writable_file
from glimpse.data import GlimpseData
from glimpse.data.canvas import DIGIT
from glimpse.data.datamodule import DATASETS
from glimpse.draw import save_pictures, to_pixels
from glimpse.models import KINDS, average_paths
from glimpse.module import GlimpseModel


def test_data(ckpt: dict, args: argparse.Namespace, model: GlimpseModel) -> GlimpseData:
    """The checkpoint's own data set (as saved by the CLI), with any flags given on top."""
    saved = saved_arguments(ckpt, "datamodule_hyper_parameters")
    saved.update({k: v for k, v in (("dataset", args.dataset), ("canvas", args.canvas),
                                    ("fragments", args.fragments)) if v is not None})
    saved.update(root=args.root, eval_batch_size=args.batch_size, shift=0)  # shift moves training digits only
    data = GlimpseData(**saved)
    if data.image_size != model.hparams.image_size:
        raise ConfigError(f"dataset={data.hparams.dataset!r} with canvas {data.image_size} is not allowed: expected "
                          f"images of {model.hparams.image_size}x{model.hparams.image_size}, the size the model was trained on")
    return data


def loader(data: GlimpseData, split: str) -> DataLoader:
    """The test images, or the validation images (to choose settings on without looking at the test set)."""
    data.prepare_data()
    data.setup("test")  # builds both splits
    return data.val_dataloader() if split == "val" else data.test_dataloader()


def evaluate(model: GlimpseModel, data: GlimpseData, samples: int, greedy: bool = True, split: str = "test",
             precision: str = "32-true") -> dict:
    """Error on ``split`` as training's own test ends: the module's test step under a Trainer, with M
    samples averaged, and the greedy path too when stochastic and asked (it does not depend on M, so
    a checkpoint tested for several M runs it once); images/s of the whole pass."""
    model.eval_samples, model.test_greedy = samples, greedy
    trainer = L.Trainer(accelerator="auto", devices=1, precision=precision, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    images = loader(data, split)
    start = time.perf_counter()
    (metrics,) = trainer.test(model, dataloaders=images, verbose=False)
    seconds = time.perf_counter() - start
    seen = len(images.dataset)
    h, cost = data.hparams, model.net.cost()
    name = h.dataset if h.dataset == "mnist" else f"{h.dataset}{h.canvas}"
    return {
        "kind": model.hparams.attention, "dataset": name, "glimpses": model.hparams.glimpses, "split": split,
        "images": seen, "std": model.net.policy.std if model.net.kind == "hard" else None,
        "samples": samples if model.net.stochastic else 1, "test_error": metrics["test/error"],
        "test_error_greedy": metrics.get("test/error_greedy"),
        "images_per_s": seen / seconds, "pixels_per_image": cost["pixels"], "macs_per_image": cost["macs"],
    }


def on_digit(locations: torch.Tensor, corners: torch.Tensor, size: int) -> torch.Tensor:
    """Whether each glimpse centre lies on the digit's 28x28 box: locations (B, T, 2) in [-1, 1],
    corners (B, 2) the digit's top-left (x, y) in pixels of a ``size`` canvas -> (B, T) bool."""
    pixels = to_pixels(locations, size, zoom=1)  # continuous pixel coordinates, 0 at the left/top edge
    offset = pixels - corners[:, None].to(pixels)
    return ((offset >= 0) & (offset < DIGIT)).all(-1)


@torch.no_grad()
def where_it_looks(model: GlimpseModel, images: torch.Tensor, labels: torch.Tensor, corners: torch.Tensor) -> dict:
    """Per step, on the greedy path: mean location (x, y), its spread over images, the share of
    images looking at the border (|x| or |y| > 0.9), the share looking at the digit (the glimpse
    centre on its 28x28 box), and the mean norm of the core state h_t. Per image: whether the path
    was on the digit at any step, and the greedy error where it was and where it was not, which
    tells a digit never found from a digit found and misread; and, by how many of the T glimpse
    centres were on the digit, the share of images and their greedy error, which tells whether a
    digit found is misread for want of glimpses left to read it.

    The state norm is there because a growing state saturates the hard policy's tanh mean and
    pushes late glimpses to the border (see docs/results.md).
    """
    norms = []
    hook = model.net.core.register_forward_hook(lambda _m, _i, out: norms.append(out[0].norm(dim=-1).mean().item()))
    try:
        out = model.net(images, greedy=True)  # soft: the expected location
    finally:
        hook.remove()
    loc, wrong = out.locations, out.logits.argmax(-1) != labels
    on = on_digit(loc, corners, images.shape[-1])  # (B, T)
    found = on.any(1)
    steps = [{"step": t + 1, "x": loc[:, t, 0].mean().item(), "y": loc[:, t, 1].mean().item(),
              "spread": loc[:, t].std(0).mean().item(), "border": (loc[:, t].abs() > 0.9).any(-1).float().mean().item(),
              "on_digit": on[:, t].float().mean().item(), "state_norm": norms[t]} for t in range(loc.shape[1])]

    groups = [on.sum(1) == k for k in range(loc.shape[1] + 1)]  # images with k glimpse centres on the digit
    by_looks = [{"looks": k, "share": g.float().mean().item(), "error": error_where(wrong, g)}
                for k, g in enumerate(groups)]
    split = split_by_found(found, wrong)
    return {"steps": steps, "by_looks": by_looks,
            "found": {"images": len(labels), "share": split["share"], "error_greedy": split["error"],
                      "error_found": split["error_found"], "error_missed": split["error_missed"]}}


def error_where(wrong: torch.Tensor, mask: torch.Tensor) -> float | None:
    """wrong, mask (B,) bool -> the error among the images ``mask`` picks (None where it picks none)."""
    return wrong[mask].float().mean().item() if mask.any() else None


def split_by_found(found: torch.Tensor, wrong: torch.Tensor) -> dict:
    """found, wrong (B,) bool -> the share found, the error, and the error among found and among missed images
    (None where there are none)."""
    return {"share": found.float().mean().item(), "error": wrong.float().mean().item(),
            "error_found": error_where(wrong, found), "error_missed": error_where(wrong, ~found)}


@torch.no_grad()
def sampled_search(model: GlimpseModel, images: torch.Tensor, labels: torch.Tensor, corners: torch.Tensor,
                   samples: int, batch_size: int = 1000) -> dict:
    """The search of M sampled paths per image (hard, choice): the share of images where the first path
    was on the digit at some step, where some of the M paths was, and the M-averaged error split by
    the latter. Tells whether averaging M paths gains by finding digits that one path misses."""
    chunk = max(1, batch_size // samples)  # M rollouts per image: keep a pass near batch_size rollouts
    ons, wrong = [], []
    for start in range(0, len(labels), chunk):
        x, y = images[start:start + chunk], labels[start:start + chunk]
        out = model.net(x, samples=samples)
        on = on_digit(out.locations, corners[start:start + chunk].repeat(samples, 1), x.shape[-1])
        ons.append(on.view(samples, len(y), -1).any(-1))  # (M, b): path m on the digit at some step
        wrong.append(average_paths(out.logits, samples).argmax(-1) != y)
    on = torch.cat(ons, 1)
    split = split_by_found(on.any(0), torch.cat(wrong))
    return {"images": len(labels), "samples": samples, "share_one": on[0].float().mean().item(), **split}


def first_images(data: GlimpseData, count: int, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` images of ``split`` and their labels (or all of them, if fewer)."""
    images, labels, have = [], [], 0
    for x, y in loader(data, split):
        images.append(x)
        labels.append(y)
        have += len(y)
        if have >= count:
            break
    return torch.cat(images)[:count], torch.cat(labels)[:count]


def percents(shares: dict) -> dict:
    """Shares and errors as text in per cent; counts as they are; "-" for an error over no images."""
    counts = ("images", "samples", "looks")
    return {k: v if k in counts else "-" if v is None else f"{100 * v:.2f} %" for k, v in shares.items()}


def looks_text(looks: dict) -> str:
    lines = ["  step      x      y  spread  border  digit  |h|"]
    lines += [f"  {s['step']:>4} {s['x']:>6.2f} {s['y']:>6.2f} {s['spread']:>7.2f} {s['border']:>7.2f} {s['on_digit']:>6.2f}"
              f" {s['state_norm']:>5.1f}" for s in looks["steps"]]
    shares = [percents(b) for b in looks["by_looks"] if b["share"]]
    lines.append("  glimpses on the digit: " + "; ".join(f"{b['looks']} for {b['share']} (error {b['error']})" for b in shares))
    f = percents(looks["found"])
    lines.append(f"  on the digit at some step: {f['share']} of {f['images']} images; greedy error {f['error_greedy']}: "
                 f"{f['error_found']} of those, {f['error_missed']} of the rest")
    if "sampled" in looks:
        s = percents(looks["sampled"])
        lines.append(f"  sampled paths, M = {s['samples']}: the first on the digit for {s['share_one']}, some path for "
                     f"{s['share']}; M-averaged error {s['error']}: {s['error_found']} of those, {s['error_missed']} of the rest")
    return "\n".join(lines)


def row_text(path: str, row: dict) -> str:
    greedy = "" if row["test_error_greedy"] is None else f"{100 * row['test_error_greedy']:.2f}"
    return (f"{row['kind']:<6} {row['dataset']:<13} {row['glimpses']:>2} {row['samples']:>3} "
            f"{100 * row['test_error']:>7.2f} {greedy:>7} {row['images_per_s']:>8,.0f} {row['pixels_per_image']:>9,}  {path}")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m glimpse.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="checkpoint files (.ckpt) of any attention kind")
    parser.add_argument("--samples", type=int, nargs="+", default=None, metavar="M",
                        help="Monte-Carlo rollouts averaged per image (hard, choice), one row per value given; "
                             "default: the model's eval_samples")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the sampled rollouts, set afresh for each row so that rows do not depend on order")
    parser.add_argument("--dataset", choices=DATASETS, help="test on this data set instead")
    parser.add_argument("--canvas", type=int, help="canvas side for --dataset translated/cluttered")
    parser.add_argument("--fragments", type=int, help="clutter fragments for --dataset cluttered")
    parser.add_argument("--attention", choices=list(KINDS), help="refuse checkpoints of another kind")
    parser.add_argument("--root", default="data", help="data root (MNIST cache)")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file: a new file, or one an "
                        "earlier --json wrote; any other existing file (a checkpoint, notes) is refused")
    parser.add_argument("--trajectories", type=Path, metavar="OUT.png",
                        help="draw the first --count test images: OUT.png (table) and OUT.gif (animation); "
                             "with several checkpoints, OUT-<n>.png")
    parser.add_argument("--count", type=int, default=8, help="test images to draw")
    parser.add_argument("--locations", type=int, metavar="N",
                        help="print where the model looks, per step, on the first N test images (greedy path), "
                             "and how often it finds the digit, on the greedy path and on some of M sampled paths "
                             "(hard, choice; M the largest --samples)")
    parser.add_argument("--split", choices=["test", "val"], default="test",
                        help="the images to evaluate on: 'val' (the checkpoint's validation split) to choose M or "
                             "--std without looking at the test set")
    parser.add_argument("--std", type=float, metavar="S",
                        help="hard checkpoints: sample paths with this std instead of the one trained with "
                             "(other kinds ignore it); the greedy path does not depend on it")
    parser.add_argument("--precision", choices=["32-true", "bf16-mixed"], default=default_precision(),
                        help="bf16-mixed: bfloat16 autocast, as training uses by default where the CPU computes "
                             "it natively (about twice the images/s there); default: train.py's on this machine")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.std is not None and not args.std > 0:
        parser.error(f"--std={args.std:g} is not allowed: expected a number > 0")
    for name in ("samples", "batch_size", "count", "locations"):
        values = getattr(args, name)
        for value in values if isinstance(values, list) else [values]:
            if value is not None and value < 1:
                parser.error(f"--{name.replace('_', '-')}={value} is not allowed: expected an integer >= 1")
    if args.trajectories is not None:  # before the evaluation that would end in writing them
        try:
            require_writable_file("--trajectories", args.trajectories)
        except ConfigError as exc:
            parser.exit(2, f"error: {exc}\n")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    quiet_library_notices()
    # the Trainer that runs each row's test pass would announce its devices and precision every row
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    if args.split != "test" or args.std is not None:  # the rows' "test_error" is then of another evaluation
        print(f"# split: {args.split}" + ("" if args.std is None else f"; hard paths sampled with std {args.std}"))
    print(f"{'kind':<6} {'dataset':<13} {'T':>2} {'M':>3} {'error%':>7} {'greedy%':>7} {'img/s':>8} {'pixels':>9}  checkpoint")
    return run_tool(lambda rows: evaluate_all(args, rows), args.json, args.verbose)


def evaluate_all(args: argparse.Namespace, rows: list) -> None:
    """Every checkpoint of the command line: its rows, and what --locations and --trajectories ask for."""
    for n, path in enumerate(args.checkpoints):
        model, ckpt = load_model(path, args.attention)
        if args.std is not None and model.net.kind == "hard":
            model.net.policy.std = args.std
        data = test_data(ckpt, args, model)
        counts = args.samples or [model.eval_samples]
        for m, samples in enumerate(counts if model.net.stochastic else counts[:1]):  # soft: M means nothing
            torch.manual_seed(args.seed)
            row = evaluate(model, data, samples, greedy=m == 0, split=args.split, precision=args.precision)
            row["precision"] = args.precision
            if m:  # the greedy path is the same for every M: measured once per checkpoint
                row["test_error_greedy"] = rows[-1]["test_error_greedy"]
            rows.append({"checkpoint": str(path), **row})
            print(row_text(path, row), flush=True)
        if args.locations:
            shown = loader(data, args.split).dataset  # the one place that picks the split's images
            corners = shown.positions[: args.locations]  # the digits' top-left (x, y), in loader order
            images, labels = first_images(data, args.locations, args.split)
            looks = where_it_looks(model, images, labels, corners)
            if model.net.stochastic:  # the largest M asked for, seeded as the rows are
                torch.manual_seed(args.seed)
                looks["sampled"] = sampled_search(model, images, labels, corners, max(counts), args.batch_size)
            rows[-1].update(looks)
            print(looks_text(looks), flush=True)
        if args.trajectories:
            out = args.trajectories if len(args.checkpoints) == 1 else \
                args.trajectories.with_name(f"{args.trajectories.stem}-{n}{args.trajectories.suffix}")
            files = save_pictures(model.net, *first_images(data, args.count, args.split), out)
            print("  drawn:", ", ".join(map(str, files)))


if __name__ == "__main__":
    sys.exit(main())
