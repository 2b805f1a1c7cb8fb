"""Reading a saved checkpoint safely: one clear line for every way a file can be wrong."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from glimpse.checks import ConfigError
from glimpse.module import GlimpseModel


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not one of ours; the message names the file."""


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint's dict, loaded with ``weights_only`` (no code runs from the file)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; all mean the same to a user
        reason = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or another format?): {reason}") from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "attention" not in ckpt.get("hyper_parameters", {}):
        raise CheckpointError(f"{path}: not a glimpse checkpoint (no model state or no attention kind saved)")
    return ckpt


def saved_arguments(ckpt: dict, key: str = "hyper_parameters") -> dict:
    """Constructor arguments saved under ``key``, without LightningCLI's private bookkeeping."""
    return {k: v for k, v in (ckpt.get(key) or {}).items() if not k.startswith("_")}


def checkpoint_kind(path: str | Path) -> str:
    return read_checkpoint(path)["hyper_parameters"]["attention"]


def load_model(path: str | Path, attention: str | None = None) -> tuple[GlimpseModel, dict]:
    """The model rebuilt from the hyperparameters saved in the file, and the checkpoint dict.

    ``attention``, when given, is the kind the caller expects; another kind is refused.
    """
    ckpt = read_checkpoint(path)
    hparams = saved_arguments(ckpt)
    if attention is not None and hparams["attention"] != attention:
        raise CheckpointError(f"{path}: a {hparams['attention']!r} attention checkpoint, but {attention!r} was asked for")
    try:
        model = GlimpseModel(**hparams)
        model.load_state_dict(ckpt["state_dict"])
        model.on_load_checkpoint(ckpt)  # state kept beside the weights (an annealed policy std)
    except (TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: incompatible with this version of the model: {first}") from exc
    return model.eval(), ckpt


def run_tool(work: Callable[[list], None], json_path: Path | None, verbose: bool = False) -> int:
    """The tail of a command that reads checkpoints: ``work`` appends its rows to a list; a bad file or
    setting ends the command with one line on stderr and status 2 (``verbose``: the traceback too),
    else the rows go to ``json_path`` when given and the status is 0."""
    rows: list = []
    try:
        work(rows)
    except (CheckpointError, ConfigError, OSError) as exc:
        if verbose:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if json_path:
        json_path.write_text(json.dumps(rows, indent=1))
    return 0
