"""Multi-process training: Lightning's DDP on CPU with 2 processes, both kinds."""

from __future__ import annotations

import subprocess
import sys

import pytest

from glimpse.checkpoints import load_model
from tests.conftest import REPO


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_ddp_two_processes(kind, data, tmp_path):
    done = subprocess.run(
        [sys.executable, "train.py", "--attention", kind, "--trainer.accelerator=cpu", "--trainer.devices=2",
         "--trainer.strategy=ddp", "--trainer.max_epochs=1", "--trainer.limit_train_batches=3",
         "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2", "--data.eval_batch_size=100",
         "--model.glimpses=3", f"--data.root={data}", f"--trainer.logger.init_args.save_dir={tmp_path}",
         f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "GLOBAL_RANK: 1" in done.stderr + done.stdout, "a second process took part"
    (run,) = (tmp_path / f"mnist-{kind}-max_epochs=1-glimpses=3").iterdir()
    writers = {p.name.split(".")[-2] for p in run.glob("events.out.tfevents.*")}  # the writing process ids
    assert len(writers) == 1, f"logs from rank zero only, got writers {writers}"
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["best-epoch001.ckpt", "last.ckpt"]
    model, _ = load_model(run / "checkpoints" / "last.ckpt", kind)
    assert model.net.kind == kind
