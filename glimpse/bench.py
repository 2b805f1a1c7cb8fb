"""Training and evaluation speed, and peak memory, per attention kind and data set.

    python -m glimpse.bench                                  # both kinds on mnist, cluttered60, cluttered100
    python -m glimpse.bench --kinds hard --settings mnist    # one cell
    python -m glimpse.bench --canvas 60 100 200              # time per image as the canvas grows
    python -m glimpse.bench --peer PEER_GIT_DIR              # one epoch of train.py beside the public RAM's

Training speed is the real Lightning training step (data generation, forward, backward, Adam)
timed over `--steps` steps after `--warmup`; beside it, "bare" times the same model, data and
optimiser stepped by a plain loop in the same process, so every row shows what Lightning costs per
step. Evaluation is `predict_proba` with the model's `eval_samples` rollouts per image (hard)
under `torch.no_grad`. Each cell runs in its own process so that its peak memory (resident set on
CPU, allocated memory on GPU) is its own. `--precision` is Lightning's (training under autocast
for the mixed ones; evaluation and the bare loop under the same context); `--compile` compiles
the training rollout and loss (the model's ``compile`` setting) and the evaluation rollouts.

`--peer` clones a git directory of the public PyTorch RAM (kevinzakka/recurrent-visual-attention),
times one training epoch of it with its own per-epoch timer, then one epoch of
``python train.py --config configs/mnist.yaml`` with validation off (the real training path), both
under this process's environment (thread count, CPU affinity), and prints both and their ratio.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Callable

import lightning as L
import torch
import yaml

from glimpse.checks import ConfigError, require_writable_file
from glimpse.cli import default_precision
from glimpse.data import GlimpseData
from glimpse.models import KINDS
from glimpse.module import KIND_SETTINGS, GlimpseModel
from glimpse.records import SETTINGS, machine

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


def setting(name: str, canvas: int | None = None) -> tuple[dict, dict]:
    """(data kwargs, model kwargs) of a config file; ``canvas`` resizes a canvas setting, keeping T."""
    path = CONFIGS / f"{name}.yaml"
    if not path.is_file():
        raise SystemExit(f"unknown setting {name!r}: expected one of {', '.join(SETTINGS)}")
    config = yaml.safe_load(path.read_text())
    data, model = dict(config.get("data", {})), dict(config.get("model", {}))
    if canvas is not None:
        data["canvas"] = canvas
    return data, model


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read after it counts that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(L.Callback):
    """Wall-clock time of the training steps after the warm-up ones."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.images = warmup, None, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == self.warmup:
            synchronize(module.device)
            self.start = time.perf_counter()
        if self.start is not None:
            self.images += len(batch[1])

    def on_train_end(self, trainer, module):
        synchronize(module.device)
        self.seconds = time.perf_counter() - self.start


def bare(model: GlimpseModel, data: GlimpseData, steps: int, warmup: int,
         context: Callable[[], AbstractContextManager]) -> tuple[float, int]:
    """Images/s (and images timed) of the model stepped by a plain loop: the same data loader,
    rollout and loss (compiled if the model compiles), optimiser and schedule as its Lightning
    step, without Lightning. ``context``: the precision context to run the forward pass in."""
    opt, sched = model.optimizer_and_schedule(lambda step: min(1.0, step / (warmup + steps)))
    samples = model.hparams.train_samples if model.net.stochastic else 1
    model.train()
    start, images_timed = None, 0
    for i, (images, labels) in enumerate(itertools.islice(data.train_dataloader(), warmup + steps)):
        if i == warmup:
            synchronize(model.device)
            start = time.perf_counter()
        images, labels = images.to(model.device), labels.to(model.device)
        with context():
            loss, _, _ = model.train_rollout(images, labels, samples)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        images_timed += len(labels) if start is not None else 0
    synchronize(model.device)
    return images_timed / (time.perf_counter() - start), images_timed


def measure(kind: str, name: str, canvas: int | None, steps: int, warmup: int, batch: int, root: str,
            precision: str = "32-true", compile: bool = False, eval_seconds: float = 2.0) -> dict:
    """One cell: train (Lightning and bare) and eval images/s and peak memory. Evaluation repeats one
    batch for at least 3 batches and at least ``eval_seconds``: a few batches of a few milliseconds
    each made the figure swing by a factor of two between runs of the same code."""
    data_kw, model_kw = setting(name, canvas)
    data = GlimpseData(root=root, batch_size=batch, **data_kw)
    model_kw = {k: v for k, v in model_kw.items() if kind in KIND_SETTINGS.get(k, (kind,))}  # as train.py reads a file
    model = GlimpseModel(attention=kind, image_size=data.image_size, compile=compile, **model_kw)
    timer = StepTimer(warmup)
    trainer = L.Trainer(max_steps=warmup + steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer], precision=precision)
    # The process warms up first (untimed bare steps): otherwise the loop timed first also pays for the
    # allocator's and the kernels' first calls, which showed as Lightning overhead for soft on cluttered60
    # (its large tensors) and for no other cell.
    data.prepare_data()
    data.setup("fit")
    forward_context = trainer.precision_plugin.forward_context
    bare(model, data, max(1, warmup), max(1, warmup), forward_context)
    trainer.fit(model, datamodule=data)
    bare_img_s, bare_images = bare(model, data, steps, warmup, forward_context)
    device = model.device
    images = next(iter(data.val_dataloader()))[0][:batch].to(device)
    samples = model.eval_samples if model.net.stochastic else 1
    model.eval()
    predict = torch.compile(model.predict_proba) if compile else model.predict_proba
    with torch.no_grad(), forward_context():
        predict(images, samples)
        synchronize(device)
        start, reps = time.perf_counter(), 0
        while reps < 3 or time.perf_counter() - start < eval_seconds:
            predict(images, samples)
            reps += 1
            synchronize(device)
        eval_seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    cost = model.net.cost()
    return {"kind": kind, "setting": name, "canvas": data.image_size, "glimpses": model.hparams.glimpses,
            "train_img_s": timer.images / timer.seconds, "train_images": timer.images,
            "bare_img_s": bare_img_s, "bare_images": bare_images, "overhead": bare_img_s / (timer.images / timer.seconds),
            "eval_img_s": reps * len(images) / eval_seconds, "eval_images": reps * len(images),
            "eval_samples": samples, "peak_mib": peak / 2**20, "pixels": cost["pixels"], "macs": cost["macs"],
            "device": str(device), "precision": trainer.precision,  # what Lightning ran (16-mixed on CPU runs bf16)
            "compile": compile}


class EpochTimer(L.Callback):
    """Prints the wall-clock time and image count of each training epoch (``--peer`` adds it to
    train.py with ``--trainer.callbacks+=glimpse.bench.EpochTimer`` and reads the line back)."""

    def on_train_epoch_start(self, trainer, module):
        synchronize(module.device)
        self.start, self.images = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.images += len(batch[1])

    def on_train_epoch_end(self, trainer, module):
        synchronize(module.device)
        print(f"glimpse.bench epoch: {self.images} images in {time.perf_counter() - self.start:.3f} s", flush=True)


PEER_IMAGES = 54_000  # its training split: 90 % of MNIST's 60,000 training images
PEER_NEEDS = ("matplotlib", "tensorboard_logger")


def peer_epoch(peer_git_dir: str, root: str) -> float:
    """Seconds of one training epoch of the public PyTorch RAM, by its own per-epoch timer (the
    elapsed time of its epoch's progress bar), with its defaults: 28x28, 6 glimpses of 8x8, batch
    128, on the CPU, one data-loading worker."""
    raw = Path(root) / "MNIST" / "raw"
    files = sorted(raw.glob("*-ubyte"))
    if len(files) < 4:
        raise SystemExit(f"--peer: expected the four uncompressed MNIST files in {raw}, found {len(files)}")
    with tempfile.TemporaryDirectory(prefix="peer-ram-") as work:
        repo = Path(work) / "repo"
        done = subprocess.run(["git", "clone", "-q", peer_git_dir, str(repo)], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"--peer: cannot clone {peer_git_dir}: {done.stderr.strip()}")
        env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}  # its protobuf is too old for the C one
        missing = [m for m in PEER_NEEDS if subprocess.run([sys.executable, "-c", f"import {m}"], env=env,
                                                           capture_output=True).returncode]
        if missing:
            raise SystemExit(f"--peer: the peer's code imports {', '.join(missing)}: pip install {' '.join(missing)}")
        (repo / "data" / "MNIST" / "raw").mkdir(parents=True)
        for f in files:
            shutil.copy(f, repo / "data" / "MNIST" / "raw")
        done = subprocess.run([sys.executable, "main.py", "--use_gpu", "False", "--epochs", "1", "--num_workers", "1",
                               "--data_dir", "./data"], cwd=repo, env=env, capture_output=True, text=True)
        log = (done.stdout + done.stderr).replace("\r", "\n")
        times = re.findall(r"^([0-9.]+)s - loss", log, flags=re.M)
        if done.returncode or not times:
            raise SystemExit(f"--peer: the peer's run failed:\n{log[-2000:]}")
        return float(times[-1])


def our_epoch(root: str, precision: str, compile: bool) -> tuple[int, float]:
    """(images, seconds) of the first training epoch of ``python train.py --config configs/mnist.yaml``
    with validation and test off (the CLI, data module, model and Lightning Trainer of a real run)."""
    with tempfile.TemporaryDirectory(prefix="glimpse-epoch-") as runs:
        cmd = [sys.executable, "train.py", "--config", "configs/mnist.yaml", f"--data.root={Path(root).resolve()}",
               "--trainer.max_epochs=1", "--trainer.limit_val_batches=0", "--trainer.limit_test_batches=0",
               f"--trainer.precision={precision}", f"--model.compile={str(compile).lower()}",
               f"--trainer.default_root_dir={runs}", f"--trainer.logger.init_args.save_dir={runs}",
               "--trainer.callbacks+=glimpse.bench.EpochTimer"]
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    found = re.search(r"glimpse.bench epoch: (\d+) images in ([0-9.]+) s", done.stdout)
    if done.returncode or not found:
        raise SystemExit(f"train.py failed:\n{(done.stdout + done.stderr)[-2000:]}")
    return int(found[1]), float(found[2])


def side_by_side(peer_git_dir: str, root: str, precision: str, compile: bool) -> dict:
    """The public RAM's epoch and ours, one after the other in this environment, and the ratio."""
    peer_s = peer_epoch(peer_git_dir, root)
    images, ours_s = our_epoch(root, precision, compile)
    peer, ours = PEER_IMAGES / peer_s, images / ours_s
    return {"peer_s": peer_s, "peer_img_s": peer, "ours_s": ours_s, "ours_images": images, "ours_img_s": ours,
            "ratio": ours / peer, "precision": precision, "compile": compile}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=["hard", "soft"], choices=list(KINDS))
    parser.add_argument("--settings", nargs="+", default=["mnist", "cluttered60", "cluttered100"], choices=SETTINGS)
    parser.add_argument("--canvas", nargs="+", type=int, default=None,
                        help="instead of --settings: cluttered60's model (T=8, 12x12, 3 scales) on these canvases")
    parser.add_argument("--steps", type=int, default=60, help="timed training steps per cell")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--eval-seconds", type=float, default=2.0,
                        help="time evaluation for at least this long (and at least 3 batches)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--root", default="data")
    parser.add_argument("--precision", default=default_precision(), choices=PRECISIONS,
                        help="Lightning's precision (bf16-mixed: bfloat16 autocast, on CPUs with AVX-512 BF16 too); "
                             "default: train.py's on this machine")
    parser.add_argument("--compile", action="store_true",
                        help="compile the training rollout and loss (the model's compile setting) and the evaluation")
    parser.add_argument("--peer", metavar="PEER_GIT_DIR",
                        help="instead of the cells: one epoch of the public PyTorch RAM (a git directory of "
                             "kevinzakka/recurrent-visual-attention) and one of train.py on mnist, and their ratio")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--one", nargs=3, metavar=("KIND", "SETTING", "CANVAS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.json:
        try:
            require_writable_file("--json", args.json)
        except ConfigError as exc:
            parser.exit(2, f"error: {exc}\n")
    if args.one:  # a child process: one cell, printed as JSON
        kind, name, canvas = args.one
        row = measure(kind, name, int(canvas) or None, args.steps, args.warmup, args.batch_size, args.root,
                      args.precision, args.compile, args.eval_seconds)
        print(json.dumps(row))
        return
    GlimpseData(root=args.root).prepare_data()  # fetch MNIST once, before the children
    print(f"# {machine()}, torch {torch.__version__}, {len(os.sched_getaffinity(0))} cores usable, "
          f"cuda {torch.cuda.is_available()}, precision {args.precision}, compile {args.compile}")
    if args.peer:
        row = side_by_side(args.peer, args.root, args.precision, args.compile)
        print(f"public RAM: {row['peer_img_s']:,.0f} img/s ({PEER_IMAGES:,} images in {row['peer_s']:.1f} s, its own timer)")
        print(f"train.py:   {row['ours_img_s']:,.0f} img/s ({row['ours_images']:,} images in {row['ours_s']:.1f} s, "
              "one epoch, validation off)")
        print(f"ratio:      {row['ratio']:.2f}x")
        rows = [row]
    else:
        rows = cells(args)
    if args.json:  # what glimpse.report draws the README's speed table from
        given = list(sys.argv[1:] if argv is None else argv)
        given = ["PEER_GIT_DIR" if args.peer and a == args.peer else a for a in given]  # not this machine's path
        command = "python -m glimpse.bench " + " ".join(given)
        args.json.write_text(json.dumps({"machine": machine(), "command": command, "rows": rows}, indent=1) + "\n")


def cells(args: argparse.Namespace) -> list[dict]:
    """Each cell in its own process, printed as a table row as it comes."""
    todo = [(k, "cluttered60", c) for c in args.canvas for k in args.kinds] if args.canvas else \
        [(k, s, 0) for s in args.settings for k in args.kinds]
    print(f"# batch {args.batch_size}, {args.steps} timed steps; bare: the same step in a plain loop, "
          "Lightning/bare: its time per step over bare's")
    print(f"{'kind':<5} {'setting':<13} {'canvas':>6} {'train img/s':>11} {'bare img/s':>10} {'Lightning/bare':>14} "
          f"{'eval img/s':>10} {'M':>3} {'peak MiB':>8} {'pixels/img':>10} {'MMACs/img':>9}")
    rows = []
    for kind, name, canvas in todo:
        cmd = [sys.executable, "-m", "glimpse.bench", "--one", kind, name, str(canvas), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--eval-seconds", str(args.eval_seconds),
               "--batch-size", str(args.batch_size), "--root", args.root,
               "--precision", args.precision] + (["--compile"] if args.compile else [])
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{kind} {name} {canvas or ''} failed:\n{done.stderr[-2000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{row['kind']:<5} {row['setting']:<13} {row['canvas']:>6} {row['train_img_s']:>11,.0f} "
              f"{row['bare_img_s']:>10,.0f} {row['overhead']:>14.2f} "
              f"{row['eval_img_s']:>10,.0f} {row['eval_samples']:>3} {row['peak_mib']:>8,.0f} {row['pixels']:>10,} "
              f"{row['macs'] / 1e6:>9.2f}", flush=True)
    return rows


if __name__ == "__main__":
    main()
