"""Training and evaluation speed, and peak memory, per attention kind and data set.

    python -m glimpse.bench                                  # both kinds on mnist, cluttered60, cluttered100
    python -m glimpse.bench --kinds hard --settings mnist    # one cell
    python -m glimpse.bench --canvas 60 100 200              # time per image as the canvas grows

Training speed is the real Lightning training step (data generation, forward, backward, Adam)
timed over `--steps` steps after `--warmup`; evaluation is `predict_proba` with the model's
`eval_samples` rollouts per image (hard) under `torch.no_grad`. Each cell runs in its own process
so that its peak memory (resident set on CPU, allocated memory on GPU) is its own. `--precision`
is Lightning's (training under autocast for the mixed ones; evaluation under the same context).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import torch
import yaml

from glimpse.data import GlimpseData
from glimpse.module import GlimpseModel

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SETTINGS = ("mnist", "translated60", "cluttered60", "cluttered100")
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


class StepTimer(L.Callback):
    """Wall-clock time of the training steps after the warm-up ones."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.images = warmup, None, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.start = time.perf_counter()
        if self.start is not None:
            self.images += len(batch[1])

    def on_train_end(self, trainer, module):
        self.seconds = time.perf_counter() - self.start


def measure(kind: str, name: str, canvas: int | None, steps: int, warmup: int, batch: int, root: str,
            precision: str = "32-true") -> dict:
    """One cell: train and eval images/s and peak memory."""
    data_kw, model_kw = setting(name, canvas)
    data = GlimpseData(root=root, batch_size=batch, **data_kw)
    model = GlimpseModel(attention=kind, image_size=data.image_size, **model_kw)
    timer = StepTimer(warmup)
    trainer = L.Trainer(max_steps=warmup + steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer], precision=precision)
    trainer.fit(model, datamodule=data)
    device = model.device
    images = next(iter(data.val_dataloader()))[0][:batch].to(device)
    samples = model.eval_samples if model.net.stochastic else 1
    model.eval()
    with torch.no_grad(), trainer.precision_plugin.forward_context():
        model.predict_proba(images, samples)
        start, reps = time.perf_counter(), max(3, steps // 10)
        for _ in range(reps):
            model.predict_proba(images, samples)
        if device.type == "cuda":
            torch.cuda.synchronize()
        eval_seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    cost = model.net.cost()
    return {"kind": kind, "setting": name, "canvas": data.image_size, "glimpses": model.hparams.glimpses,
            "train_img_s": timer.images / timer.seconds, "eval_img_s": reps * len(images) / eval_seconds,
            "eval_samples": samples, "peak_mib": peak / 2**20, "pixels": cost["pixels"], "macs": cost["macs"],
            "device": str(device), "precision": trainer.precision}  # what Lightning ran (16-mixed on CPU runs bf16)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=["hard", "soft"], choices=["hard", "soft", "choice"])
    parser.add_argument("--settings", nargs="+", default=["mnist", "cluttered60", "cluttered100"], choices=SETTINGS)
    parser.add_argument("--canvas", nargs="+", type=int, default=None,
                        help="instead of --settings: cluttered60's model (T=8, 12x12, 3 scales) on these canvases")
    parser.add_argument("--steps", type=int, default=60, help="timed training steps per cell")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--root", default="data")
    parser.add_argument("--precision", default="32-true", choices=PRECISIONS,
                        help="Lightning's precision (bf16-mixed: bfloat16 autocast, on CPUs with AVX-512 BF16 too)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--one", nargs=3, metavar=("KIND", "SETTING", "CANVAS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:  # a child process: one cell, printed as JSON
        kind, name, canvas = args.one
        row = measure(kind, name, int(canvas) or None, args.steps, args.warmup, args.batch_size, args.root,
                      args.precision)
        print(json.dumps(row))
        return
    GlimpseData(root=args.root).prepare_data()  # fetch MNIST once, before the children
    cells = [(k, "cluttered60", c) for c in args.canvas for k in args.kinds] if args.canvas else \
        [(k, s, 0) for s in args.settings for k in args.kinds]
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, cuda {torch.cuda.is_available()}, batch {args.batch_size}, {args.steps} timed steps, "
          f"precision {args.precision}")
    print(f"{'kind':<5} {'setting':<13} {'canvas':>6} {'train img/s':>11} {'eval img/s':>10} {'M':>3} "
          f"{'peak MiB':>8} {'pixels/img':>10} {'MMACs/img':>9}")
    rows = []
    for kind, name, canvas in cells:
        cmd = [sys.executable, "-m", "glimpse.bench", "--one", kind, name, str(canvas), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--batch-size", str(args.batch_size), "--root", args.root,
               "--precision", args.precision]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{kind} {name} {canvas or ''} failed:\n{done.stderr[-2000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{row['kind']:<5} {row['setting']:<13} {row['canvas']:>6} {row['train_img_s']:>11,.0f} "
              f"{row['eval_img_s']:>10,.0f} {row['eval_samples']:>3} {row['peak_mib']:>8,.0f} {row['pixels']:>10,} "
              f"{row['macs'] / 1e6:>9.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
