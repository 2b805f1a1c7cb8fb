"""What a new user meets first: the help text and a clean default run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


def test_help_opens_with_the_projects_own_options():
    done = subprocess.run([sys.executable, "train.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    head = "\n".join(done.stdout.splitlines()[:40])
    for option in ("--attention", "--config", "--model.", "--data.", "--name"):
        assert option in head, option
    assert head.index("--attention") < head.index("--trainer.") if "--trainer." in head else True


@pytest.mark.slow
def test_a_short_default_run_prints_no_warnings(data, tmp_path):
    """The default command, shortened: nothing the user cannot act on (library notices, deprecations)."""
    runs = tmp_path / "runs"
    done = subprocess.run(
        [sys.executable, "train.py", "--attention", "hard", f"--data.root={data}",
         f"--trainer.logger.init_args.save_dir={runs}", f"--trainer.default_root_dir={runs}",
         "--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2",
         "--trainer.limit_test_batches=2", "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    for noise in ("warn", "deprecat", "tip:"):
        assert noise not in output.lower(), [line for line in output.splitlines() if noise in line.lower()]
    assert f"run folder: {runs}/mnist-hard-max_epochs=1/version_0" in output
