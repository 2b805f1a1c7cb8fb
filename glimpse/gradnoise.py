"""Gradient noise of the attention parameters: how noisy is the signal that teaches where to look?

    python -m glimpse.gradnoise runs/mnist-hard/version_0/checkpoints/last.ckpt runs/mnist-soft/.../last.ckpt

For each checkpoint, the gradient of the loss term that trains the attention — hard: REINFORCE
on the location network, with the learned baseline and without it (advantage = R); choice with
REINFORCE: the same on the scorer; soft and choice with Gumbel: cross-entropy on the scorer — is
computed on ``--batches`` minibatches of training images, at fixed weights. Reported per
checkpoint: the total variance of one minibatch's estimate (sum over parameters of the variance
across minibatches), the squared norm of the true gradient (estimated without bias: the squared
norm of the mean minus variance / batches, since the mean of n estimates carries variance / n of
noise itself), and their ratio: the number of minibatches one must average for the signal to
match the noise. The ratio is scale-free, so it compares kinds and terms of different sizes;
where the signal estimate is not positive, the noise hides it at this number of batches.

``--paths M`` (M >= 2) samples M paths per image and adds a third REINFORCE term, the leave-one-out
baseline (``--model.baseline leave_one_out``); all terms then use the same M * batch-size paths.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from glimpse.checkpoints import load_model, run_tool, saved_arguments
from glimpse.data import GlimpseData
from glimpse.losses import final_reward, leave_one_out, reinforce


def attention_terms(model, images, labels, paths: int = 1) -> dict[str, tuple[torch.Tensor, list[torch.nn.Parameter]]]:
    """name -> (the loss term that trains the attention, the attention parameters)."""
    net = model.net
    paths = paths if net.stochastic else 1  # a deterministic kind's paths are all the same one
    out = net(images, samples=paths)
    labels = labels.repeat(paths)
    if net.kind == "hard" or getattr(net, "estimator", None) == "reinforce":
        params = list((net.policy if net.kind == "hard" else net.scorer).parameters())
        reward = final_reward(out.logits, labels)
        terms = {"reinforce, baseline": out.baselines, "reinforce, no baseline": torch.zeros_like(out.baselines)}
        if paths > 1:
            terms["reinforce, leave-one-out"] = leave_one_out(reward, out.log_probs.shape[1], paths)
        return {name: (reinforce(out.log_probs, b, reward)["reinforce"], params) for name, b in terms.items()}
    return {"cross-entropy": (F.cross_entropy(out.logits, labels), list(net.scorer.parameters()))}


def measure(path: str, batches: int, batch_size: int, root: str, seed: int, paths: int = 1) -> list[dict]:
    model, ckpt = load_model(path)
    model.train()
    data = GlimpseData(**{**saved_arguments(ckpt, "datamodule_hyper_parameters"), "root": root, "batch_size": batch_size})
    data.prepare_data()
    data.setup("fit")
    torch.manual_seed(seed)
    grads: dict[str, list[torch.Tensor]] = {}
    loader = iter(data.train_dataloader())
    for _ in range(batches):
        images, labels = next(loader)
        for name, (loss, params) in attention_terms(model, images, labels, paths).items():
            g = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            flat = torch.cat([(x if x is not None else torch.zeros_like(p)).flatten() for x, p in zip(g, params)])
            grads.setdefault(name, []).append(flat)
    return [{"checkpoint": path, "kind": model.hparams.attention, "term": name, "paths": paths, "parameters": gs[0].numel(),
             **noise_stats(torch.stack(gs))} for name, gs in grads.items()]


def noise_stats(g: torch.Tensor) -> dict:
    """g (n, P): n independent estimates of one gradient -> variance, signal, their ratio."""
    n = g.shape[0]
    variance = g.var(0).sum().item()
    signal = g.mean(0).square().sum().item() - variance / n  # E|mean|^2 = |true|^2 + variance / n
    return {"total_variance": variance, "signal_sq_norm": signal,
            "batches_for_snr1": variance / signal if signal > 0 else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m glimpse.gradnoise", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--root", default="data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--paths", type=int, default=1, help="sampled paths per image (>= 2 adds leave-one-out)")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file: a new file, or one an "
                        "earlier --json wrote; any other existing file (a checkpoint, notes) is refused")
    args = parser.parse_args(argv)
    if args.batches < 2:
        parser.error(f"--batches={args.batches} is not allowed: expected an integer >= 2 (a variance needs two)")
    if args.paths < 1:
        parser.error(f"--paths={args.paths} is not allowed: expected an integer >= 1")
    print(f"{'kind':<7} {'term':<24} {'params':>7} {'variance':>10} {'|E g|^2':>10} {'batches/SNR1':>12}")
    return run_tool(lambda rows: measure_all(args, rows), args.json)


def measure_all(args: argparse.Namespace, rows: list) -> None:
    """Every checkpoint of the command line: its rows, printed as they come (a long run shows progress)."""
    for path in args.checkpoints:
        for row in measure(path, args.batches, args.batch_size, args.root, args.seed, args.paths):
            rows.append(row)
            ratio = row["batches_for_snr1"]
            print(f"{row['kind']:<7} {row['term']:<24} {row['parameters']:>7,} {row['total_variance']:>10.3e} "
                  f"{row['signal_sq_norm']:>10.3e} {'hidden' if ratio is None else f'{ratio:.1f}':>12}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
