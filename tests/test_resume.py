"""Reliability: a SIGKILLed run resumes exactly; the same seed gives the same run twice."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from glimpse.checkpoints import load_model
from tests.conftest import REPO, SMALL_NET

SHORT = ["--trainer.max_epochs=3", "--trainer.limit_train_batches=30", "--trainer.limit_val_batches=2",
         "--trainer.limit_test_batches=2", "--data.eval_batch_size=250", "--model.eval_samples=2", *SMALL_NET]


def final_metrics(run) -> dict[str, float]:
    return {k: float(v) for k, v in run.trainer.callback_metrics.items() if k.startswith(("val/", "test/"))}


@pytest.mark.slow
def test_same_seed_same_metrics(cli):
    first = final_metrics(cli("--attention", "hard", *SHORT))
    second = final_metrics(cli("--attention", "hard", *SHORT))
    assert first and first == second


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(cli, data, tmp_path):
    runs = tmp_path / "runs"
    whole = final_metrics(cli("--attention", "hard", *SHORT, "--trainer.logger.init_args.name=whole"))
    cmd = [sys.executable, "train.py", "--attention", "hard", *SHORT, f"--data.root={data}",
           f"--trainer.default_root_dir={runs}", f"--trainer.logger.init_args.save_dir={runs}",
           "--trainer.logger.init_args.name=killed", "--trainer.enable_progress_bar=false"]
    process = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = runs / "killed" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert last.exists(), process.stderr.read().decode()[-2000:] if process.poll() is not None else "no checkpoint"
    time.sleep(0.3)  # into the second epoch (kept short: a fast machine runs 30 narrow steps in about a second)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run was still training when it was killed"
    resumed = cli("--attention", "hard", *SHORT, "--trainer.logger.init_args.name=killed", "--ckpt_path", "last")
    assert resumed.trainer.current_epoch == 3
    assert resumed.config.ckpt_path == str(last)
    assert final_metrics(resumed) == whole


@pytest.mark.slow
def test_run_killed_after_training_tests_the_same(cli):
    """A kill between the last checkpoint and the end of testing: resuming only re-tests, with the same draws."""
    whole = final_metrics(cli("--attention", "hard", *SHORT, "--trainer.logger.init_args.name=done"))
    again = cli("--attention", "hard", *SHORT, "--trainer.logger.init_args.name=done", "--ckpt_path", "last")
    assert again.trainer.current_epoch == 3
    assert final_metrics(again) == whole


def test_last_checkpoint_is_the_last_epoch_even_when_the_best_is_older(cli, tmp_path):
    """Lightning 2.6 writes ``save_last`` only beside a new best; ours is every epoch's, so a run killed
    long after its best resumes where it stopped. Monitoring ``epoch`` (mode min) makes epoch 0 the only best."""
    cli("--attention", "soft", "--trainer.max_epochs=3", "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2", "--data.eval_batch_size=250",
        "--checkpoint.monitor=epoch")
    saved = {p.name: p for p in (tmp_path / "runs").rglob("*.ckpt")}
    assert set(saved) == {"best-epoch001.ckpt", "last.ckpt"}, saved
    assert load_model(saved["best-epoch001.ckpt"])[1]["epoch"] == 0
    _, last = load_model(saved["last.ckpt"])
    assert (last["epoch"], last["global_step"]) == (2, 6)


class PoisonAt(L.Callback):
    """Makes the loss non-finite from global step 7 on (the second epoch of 5 steps)."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == 7:
            with torch.no_grad():
                module.net.classifier.weight.fill_(float("nan"))


def test_non_finite_loss_stops_naming_the_step_and_keeps_checkpoints(cli, tmp_path):
    with pytest.raises(FloatingPointError, match="global step 7 .epoch 1, batch 2."):
        cli("--attention", "soft", "--trainer.max_epochs=3", "--trainer.limit_train_batches=5",
            "--trainer.limit_val_batches=2", "--data.eval_batch_size=250", "--trainer.callbacks+=tests.test_resume.PoisonAt")
    saved = {p.name: p for p in (tmp_path / "runs").rglob("*.ckpt")}
    assert {"last.ckpt", "best-epoch001.ckpt"} <= set(saved), saved
    model, ckpt = load_model(saved["last.ckpt"])
    assert ckpt["epoch"] == 0 and all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.slow
def test_resumed_pictures_continue_the_same_timeline(cli, tmp_path):
    cli("--attention", "hard", *SHORT[1:], "--trainer.max_epochs=1", "--trainer.logger.init_args.name=t")
    cli("--attention", "hard", *SHORT[1:], "--trainer.max_epochs=2", "--trainer.logger.init_args.name=t",
        "--ckpt_path", "last")
    (run,) = (tmp_path / "runs" / "t").iterdir()
    events = EventAccumulator(str(run), size_guidance={"images": 0})
    events.Reload()
    assert [e.step for e in events.Images("pictures/steps")] == [30, 60]


TINY = ["--attention", "soft", "--name=mnist-soft", "--model.glimpses=2", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2",
        "--trainer.limit_test_batches=2", "--data.batch_size=32", "--data.eval_batch_size=100"]


def snapshot(folder) -> dict[str, str]:
    """Every file under ``folder`` by its path there, with the md5 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.mark.slow
def test_resume_continues_the_checkpoints_own_run_even_after_its_folder_moved(cli, tmp_path):
    """Run A trained; ``runs`` moved to ``runs_A``; run B trained into ``runs/mnist-soft/version_0``; A resumed
    from ``runs_A/.../last.ckpt`` with the default save_dir: A's own folder goes on, B's files stay as they
    were, and a resume with nothing left to train tests A's best checkpoint, not B's."""
    runs, moved = tmp_path / "runs", tmp_path / "runs_A"
    a = final_metrics(cli(*TINY, "--trainer.max_epochs=1"))
    runs.rename(moved)
    b = final_metrics(cli(*TINY, "--trainer.max_epochs=1", "--seed_everything=1"))
    assert a["test/loss"] != b["test/loss"], "the two runs must differ for the test to tell them apart"
    run_a, run_b = moved / "mnist-soft" / "version_0", runs / "mnist-soft" / "version_0"
    before_b, before_a = snapshot(run_b), snapshot(run_a)

    again = cli(*TINY, "--trainer.max_epochs=1", "--ckpt_path", str(run_a / "checkpoints" / "last.ckpt"))
    assert final_metrics(again)["test/loss"] == a["test/loss"], "only the test was left: A's best, tested again"
    assert snapshot(run_b) == before_b and list(runs.rglob("version_*")) == [run_b]

    longer = cli(*TINY, "--trainer.max_epochs=2", "--ckpt_path", str(run_a / "checkpoints" / "last.ckpt"))
    assert longer.trainer.current_epoch == 2
    assert snapshot(run_b) == before_b, "B's checkpoints, config and event files are untouched"
    assert list(runs.rglob("version_*")) == [run_b], "no new run folder beside B"
    _, last = load_model(run_a / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 1 and snapshot(run_a)["checkpoints/last.ckpt"] != before_a["checkpoints/last.ckpt"]
    assert len(list(run_a.glob("events.out.tfevents.*"))) > len([k for k in before_a if k.startswith("events")])
    best = longer.trainer.checkpoint_callback.best_model_path
    assert Path(best).parent == run_a / "checkpoints", best


def test_checkpoint_outside_any_run_starts_a_new_version(cli, tmp_path):
    cli(*TINY, "--trainer.max_epochs=1")
    run = tmp_path / "runs" / "mnist-soft" / "version_0"
    before = snapshot(run)
    loose = tmp_path / "kept.ckpt"
    shutil.copy(run / "checkpoints" / "last.ckpt", loose)
    resumed = cli(*TINY, "--trainer.max_epochs=2", "--ckpt_path", str(loose))
    assert resumed.trainer.current_epoch == 2
    assert snapshot(run) == before, "the run the file once came from is untouched"
    new = tmp_path / "runs" / "mnist-soft" / "version_1"
    assert load_model(new / "checkpoints" / "last.ckpt")[1]["epoch"] == 1
