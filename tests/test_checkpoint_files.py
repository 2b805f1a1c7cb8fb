"""Checkpoint files one can trust: written whole or not at all, refused when altered, never overwritten by
an output, and resumed from the newest one that reads back whole."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from glimpse.checkpoints import CHECKSUM, AtomicCheckpointIO, CheckpointError, load_model, read_checkpoint
from glimpse.checks import ConfigError
from tests.conftest import REPO

TINY = ["--attention", "soft", "--name=mnist-soft", "--model.glimpses=2", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2",
        "--trainer.limit_test_batches=2", "--data.batch_size=32", "--data.eval_batch_size=100"]


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    """The folder of one tiny two-epoch soft run, trained through train.py's code path (read only: copy to alter)."""
    from glimpse.cli import main

    runs = tmp_path_factory.mktemp("runs")
    main(args=[f"--data.root={data}", f"--trainer.logger.init_args.save_dir={runs}", "--trainer.enable_progress_bar=false",
               *TINY, "--trainer.max_epochs=2", "--checkpoint.monitor=epoch"])  # best: epoch 0; last: epoch 1
    return runs / "mnist-soft" / "version_0"


def flipped(source: Path, target: Path) -> Path:
    """A copy of a checkpoint with one weight tensor's sign flipped and everything else, checksum included, kept."""
    ckpt = torch.load(source, weights_only=True)
    name = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point() and v.abs().sum() > 0)
    ckpt["state_dict"][name] = -ckpt["state_dict"][name]
    torch.save(ckpt, target)
    return target


def test_saved_checkpoints_carry_the_checksum_of_their_weights(run):
    ckpt = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert len(ckpt[CHECKSUM]) == 64 and ckpt["epoch"] == 1


def test_altered_weights_are_refused_by_every_reader(run, tmp_path, data, capsys):
    from glimpse.evaluate import main as evaluate
    from glimpse.gradnoise import measure

    bad = flipped(run / "checkpoints" / "last.ckpt", tmp_path / "flipped.ckpt")
    with pytest.raises(CheckpointError, match="do not match the checksum"):
        load_model(bad)
    with pytest.raises(CheckpointError, match="do not match the checksum"):
        measure(str(bad), 2, 8, data, 0)
    assert evaluate([str(bad), "--root", data]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "do not match the checksum" in err[0], err


def test_resume_refuses_altered_weights_before_writing(cli, run, tmp_path):
    bad = flipped(run / "checkpoints" / "last.ckpt", tmp_path / "flipped.ckpt")
    with pytest.raises(CheckpointError, match="do not match the checksum"):
        cli(*TINY, "--trainer.max_epochs=3", "--ckpt_path", str(bad))
    assert not (tmp_path / "runs").exists()


def test_interrupted_write_keeps_the_old_file_and_leaves_no_part(tmp_path):
    """A write stopped half way (here by an exception, below by SIGKILL) never touches the real name."""
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 0}, path)

    class Stop(BaseException):
        pass

    class Half:  # fails while the checkpoint is being written
        def __reduce__(self):
            raise Stop

    with pytest.raises(Stop):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 1, "x": Half()}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    (tmp_path / ".last.ckpt.killed.part").write_bytes(b"half")  # what a SIGKILLed writer leaves
    io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 1}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"], "the next save removes it"
    assert io.load_checkpoint(path)["epoch"] == 1


def test_last_falls_back_to_the_newest_intact_checkpoint(cli, run, tmp_path, capsys):
    """A last.ckpt cut to nothing (a kill during a copy from another file system did that) is skipped for
    the newest checkpoint that reads back whole: the best one of epoch 0, so epoch 1 is trained again."""
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(run, runs / "mnist-soft" / "version_0")
    last = runs / "mnist-soft" / "version_0" / "checkpoints" / "last.ckpt"
    last.write_bytes(b"")
    resumed = cli(*TINY, "--trainer.max_epochs=2", "--checkpoint.monitor=epoch", "--ckpt_path", "last")
    assert Path(resumed.config.ckpt_path).name == "best-epoch001.ckpt"
    assert f"skipping {last}: empty file" in capsys.readouterr().err
    assert resumed.trainer.current_epoch == 2 and read_checkpoint(last)["epoch"] == 1


def test_resume_with_other_widths_is_one_line_naming_them(cli, run, tmp_path):
    with pytest.raises(ConfigError) as caught:
        cli(*TINY, "--trainer.max_epochs=3", "--model.hidden=128", "--ckpt_path", str(run / "checkpoints" / "last.ckpt"))
    message = str(caught.value)
    assert "\n" not in message and "hidden=256 in the checkpoint, 128 here" in message and ", 256) here" in message, message
    assert not (tmp_path / "runs").exists(), "no folder for a refused run"


def test_json_output_never_replaces_a_file_that_is_not_ours(run, tmp_path, data, capsys):
    """evaluate --json (and gradnoise --json) write a new file or replace their own earlier rows; a
    checkpoint or any other file is refused before any work, and so is a path that cannot be written."""
    from glimpse.evaluate import main as evaluate

    ckpt = run / "checkpoints" / "best-epoch001.ckpt"
    before = ckpt.read_bytes()
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    for target, why in ((ckpt, "this file exists and is not one"), (notes, "this file exists and is not one"),
                        (REPO / "train.py" / "rows.json", "train.py is not a folder"),
                        (tmp_path, "this is a folder")):
        assert evaluate(["missing.ckpt", "--json", str(target)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"--json='{target}'" in err[0] and why in err[0], err
    assert ckpt.read_bytes() == before and notes.read_text() == '{"mine": 1}'
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([{"checkpoint": "an/earlier.ckpt", "kind": "hard"}]))  # our own earlier output
    assert evaluate([str(ckpt), "--root", data, "--batch-size", "5000", "--json", str(rows)]) == 0
    assert [r["checkpoint"] for r in json.loads(rows.read_text())] == [str(ckpt)]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


class SlowWrites(L.Callback):
    """Holds every checkpoint write for half a second once its bytes are written, before it is made
    the checkpoint, so that the test can kill the run during a write whatever the machine's speed."""

    def setup(self, trainer, module, stage):
        import glimpse.checkpoints as checkpoints

        original = checkpoints.write_atomic

        def slow(path, write):
            def then_wait(f):
                write(f)
                f.flush()
                time.sleep(0.5)
            original(path, then_wait)

        checkpoints.write_atomic = slow


@pytest.mark.slow
def test_kill_while_a_checkpoint_is_written_leaves_an_intact_one(cli, data, tmp_path):
    """SIGKILL while last.ckpt is being rewritten, with TMPDIR on another file system where there is one:
    last.ckpt still reads back (the previous epoch's), nothing is left in TMPDIR, and the run resumes
    from it to the end with no partial file left behind."""
    shm = Path("/dev/shm")
    other = shm if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != tmp_path.stat().st_dev else tmp_path
    tmpdir = Path(__import__("tempfile").mkdtemp(dir=other, prefix="glimpse-tmpdir-"))
    runs = tmp_path / "runs"
    cmd = [sys.executable, "train.py", *TINY, "--trainer.max_epochs=3", "--checkpoint.monitor=epoch",
           f"--data.root={data}", f"--trainer.logger.init_args.save_dir={runs}", "--trainer.logger.init_args.name=k",
           "--trainer.enable_progress_bar=false", "--trainer.callbacks+=tests.test_checkpoint_files.SlowWrites"]
    process = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "TMPDIR": str(tmpdir)})
    folder = runs / "mnist-soft" / "version_0" / "checkpoints"  # TINY names the run
    last = folder / "last.ckpt"
    deadline, writing = time.monotonic() + 300, False
    try:
        while process.poll() is None and time.monotonic() < deadline and not writing:
            writing = last.exists() and (any(folder.glob(".*.part")) or any(tmpdir.iterdir()))
            time.sleep(0.001)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert writing, process.stderr.read().decode()[-2000:]
        assert read_checkpoint(last)["epoch"] == 0, "the previous epoch's last.ckpt, whole"
        assert list(tmpdir.iterdir()) == [], "nothing left in TMPDIR"
    finally:
        for leftover in tmpdir.iterdir():
            leftover.unlink()
        tmpdir.rmdir()
    resumed = cli(*TINY, "--trainer.max_epochs=3", "--checkpoint.monitor=epoch", "--trainer.logger.init_args.name=k",
                  "--ckpt_path", "last")
    assert resumed.trainer.current_epoch == 3 and read_checkpoint(last)["epoch"] == 2
    assert list(runs.rglob("*.part")) == [], "the killed writer's partial file is gone"


def test_a_saved_setting_of_another_kind_is_reset_on_loading(run, tmp_path):
    """Soft runs made with a shared config file saved the hard policy's std (0.25 in configs/cluttered60.yaml);
    they load with the default, which the model accepts for soft attention."""
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["std"] = 0.25
    torch.save(ckpt, tmp_path / "old.ckpt")
    model, _ = load_model(tmp_path / "old.ckpt")
    assert model.hparams.std == 0.1 and model.hparams.attention == "soft"
