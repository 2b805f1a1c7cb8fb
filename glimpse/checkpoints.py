"""Checkpoints on disk: written atomically with a checksum of the weights, read back safely, one clear
line for every way a file can be wrong."""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from glimpse.checks import ConfigError, require_new_output
from glimpse.module import KIND_SETTINGS, GlimpseModel

CHECKSUM = "state_dict_sha256"  # the checkpoint key of the weights' checksum
PARTIAL = ".part"  # suffix of a checkpoint still being written (hidden name, same folder)


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, altered or not one of ours; the message names the file."""


def state_checksum(state: Mapping[str, Any]) -> str:
    """sha256 over every entry's name, dtype, shape and bytes, in name order.

    Why the bytes and not a hash of the file: the file also holds optimiser and loop state that
    Lightning rewrites; the weights are what a flipped bit or an edit would silently change.
    """
    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        if isinstance(value, torch.Tensor):
            flat = value.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{name}|{flat.dtype}|{tuple(value.shape)}|".encode())
            digest.update(flat.view(torch.uint8).numpy())
        else:
            digest.update(f"{name}|{value!r}|".encode())
    return digest.hexdigest()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made safe against a kill mid-write, with the weights' checksum added.

    Why: Lightning's own "atomic" save stages the file through fsspec in the system temporary
    folder; with TMPDIR on another file system the final move is a copy, and a kill during it
    leaves a truncated ``last.ckpt`` (and a stray temporary file). Here the file is written under a
    hidden name in its own folder, flushed to disk, then renamed over the real name, which is
    atomic on one file system: a reader sees the old file or the new one, never a part. Partial
    files a killed writer left in the folder are removed at the next save.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        if "state_dict" in checkpoint:
            checkpoint = {**checkpoint, CHECKSUM: state_checksum(checkpoint["state_dict"])}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".*.ckpt.*{PARTIAL}"):  # one writer per run folder: these are a killed one's
            stale.unlink(missing_ok=True)
        write_atomic(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict[str, Any]:
        checkpoint = super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        verify_checksum(checkpoint, path)
        return checkpoint


def write_atomic(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Call ``write`` on a hidden file beside ``path``, flush it to disk, rename it to ``path``; on any
    failure (or interruption) the hidden file is removed and ``path`` is untouched."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide a shared run from other users
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power cut
    finally:
        os.close(folder)


def verify_checksum(ckpt: dict, path: str | Path) -> None:
    """Refuse weights that differ from those saved. A checkpoint written before checksums were
    saved has none to verify and is accepted as it is."""
    saved = ckpt.get(CHECKSUM)
    if saved is not None and "state_dict" in ckpt and state_checksum(ckpt["state_dict"]) != saved:
        raise CheckpointError(f"{path}: its weights do not match the checksum saved with them "
                              "(altered or corrupted after saving); refusing to use it")


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint's dict, loaded with ``weights_only`` (no code runs from the file), its weights verified."""
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
    verify_checksum(ckpt, path)
    return ckpt


def saved_arguments(ckpt: dict, key: str = "hyper_parameters") -> dict:
    """Constructor arguments saved under ``key``, without LightningCLI's private bookkeeping."""
    return {k: v for k, v in (ckpt.get(key) or {}).items() if not k.startswith("_")}


def checkpoint_kind(path: str | Path) -> str:
    return read_checkpoint(path)["hyper_parameters"]["attention"]


def other_kinds_defaults(attention: str) -> dict[str, Any]:
    """The settings only other attention kinds read (``glimpse.module.KIND_SETTINGS``), with their defaults."""
    defaults = {n: p.default for n, p in inspect.signature(GlimpseModel.__init__).parameters.items()}
    return {name: defaults[name] for name, kinds in KIND_SETTINGS.items() if attention not in kinds}


def run_folder(path: str | Path) -> Path | None:
    """The run folder (``<save_dir>/<name>/version_N``) a checkpoint was saved in, or None for a file
    kept elsewhere. Lightning writes a run's checkpoints to ``version_N/checkpoints``."""
    path = Path(path)
    run = path.parent.parent
    if path.parent.name == "checkpoints" and re.fullmatch(r"version_\d+", run.name):
        return run
    return None


def newest_intact(runs: Path, warn: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> Path | None:
    """The newest checkpoint under ``runs/version_*/checkpoints`` that reads back whole, or None.

    Newest by modification time, ``last.ckpt`` before a best checkpoint of the same moment. A file
    that does not read back (cut short by a kill, altered) is skipped, and ``warn`` is told which.
    """
    found = sorted(runs.glob("version_*/checkpoints/*.ckpt"), key=lambda p: (p.stat().st_mtime_ns, p.name == "last.ckpt"),
                   reverse=True)
    for path in found:
        try:
            read_checkpoint(path)
        except CheckpointError as exc:
            warn(f"warning: skipping {exc}")
            continue
        return path
    return None


def load_model(path: str | Path, attention: str | None = None) -> tuple[GlimpseModel, dict]:
    """The model rebuilt from the hyperparameters saved in the file (Lightning's ``load_from_checkpoint``),
    and the checkpoint dict.

    ``attention``, when given, is the kind the caller expects; another kind is refused.
    """
    ckpt = read_checkpoint(path)
    kind = ckpt["hyper_parameters"]["attention"]
    if attention is not None and kind != attention:
        raise CheckpointError(f"{path}: a {kind!r} attention checkpoint, but {attention!r} was asked for")
    saved = ckpt["hyper_parameters"]
    # a run made before other kinds' settings were refused may have saved one (from a shared config file)
    reset = {k: v for k, v in other_kinds_defaults(kind).items() if k in saved and saved[k] != v}
    try:
        model = GlimpseModel.load_from_checkpoint(path, map_location="cpu", weights_only=True, **reset)
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: incompatible with this version of the model: {first}") from exc
    return model.eval(), ckpt


def run_tool(work: Callable[[list], None], json_path: Path | None, verbose: bool = False) -> int:
    """The tail of a command that reads checkpoints: ``work`` appends its rows to a list; a bad file or
    setting ends the command with one line on stderr and status 2 (``verbose``: the traceback too),
    else the rows go to ``json_path`` when given and the status is 0.

    ``json_path`` is checked before any work (see ``glimpse.checks.require_new_output``) and written
    atomically, so a kill never leaves half a file."""
    rows: list = []
    try:
        if json_path:
            require_new_output("--json", json_path, ours=is_rows_file)
        work(rows)
        if json_path:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(json_path, lambda f: f.write(json.dumps(rows, indent=1).encode()))
    except (CheckpointError, ConfigError, OSError) as exc:
        if verbose:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def is_rows_file(path: Path) -> bool:
    """Whether ``path`` holds rows an earlier ``--json`` of ours wrote (a JSON list of objects that each
    name a checkpoint), so writing it again replaces only our own output."""
    try:
        if path.stat().st_size > 100_000_000:
            return False
        rows = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(rows, list) and all(isinstance(r, dict) and "checkpoint" in r for r in rows)
