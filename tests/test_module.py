"""The LightningModule's training step: what it logs and when, its optimiser, its guard."""

from __future__ import annotations

import csv

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger

from glimpse.data import GlimpseData
from glimpse.module import GlimpseModel


class Losses(L.Callback):
    """The loss each training step returned, by global step."""

    def __init__(self):
        self.by_step: dict[int, float] = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.by_step[trainer.global_step - 1] = outputs["loss"].item()


def test_train_scalars_are_written_on_logging_steps_with_that_steps_values(data, tmp_path):
    """Logging only on the steps the logger writes must still write every scalar, each the value of
    its own step (not one left over from an earlier step)."""
    torch.manual_seed(0)
    model = GlimpseModel(attention="hard", glimpses=2, hidden=32, what=16, where=16, glimpse_features=32)
    losses = Losses()
    trainer = L.Trainer(max_steps=7, log_every_n_steps=3, limit_val_batches=0, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[losses],
                        logger=CSVLogger(tmp_path, name="log"))
    trainer.fit(model, datamodule=GlimpseData(root=data, batch_size=8))
    (path,) = tmp_path.rglob("metrics.csv")
    rows = [r for r in csv.DictReader(path.open()) if r.get("train/loss")]
    assert [int(r["step"]) for r in rows] == [2, 5]
    for r in rows:
        assert float(r["train/loss"]) == torch.tensor(losses.by_step[int(r["step"])]).item()
    assert {"train/ce", "train/reinforce", "train/error", "train/std"} <= set(rows[0])


def test_optimisers_are_fused():
    """One kernel for all parameters: on CPU the unfused default loops over them in Python."""
    for name in ("adam", "sgd"):
        model = GlimpseModel(attention="soft", optimizer=name, schedule="constant")
        opt = model.configure_optimizers()["optimizer"]
        assert opt.defaults["fused"] is True, name


TINY = ["--model.hidden=16", "--model.what=8", "--model.where=8", "--model.glimpse_features=16", "--model.glimpses=3",
        "--model.eval_samples=2", "--data.eval_batch_size=100", "--data.batch_size=16", "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2"]


@pytest.mark.parametrize("kind", ["hard", "choice"])
@pytest.mark.parametrize("logger", [True, False])
def test_a_diverged_run_stops_with_one_error_naming_the_step_and_saves_nothing(cli, tmp_path, kind, logger):
    """lr 1e30 makes the loss non-finite within a step or two: the run must end with the guard's
    FloatingPointError (not an error from inside sampling), before any validation or checkpoint."""
    off = [] if logger else ["--trainer.logger=false"]
    with pytest.raises(FloatingPointError, match=r"non-finite training loss at global step \d+ ") as caught:
        cli("--attention", kind, "--model.lr=1e30", *TINY, *off)
    assert "\n" not in str(caught.value)
    assert not list(tmp_path.rglob("*.ckpt")), "a diverged model was saved"


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_learning_rate_monitor_logs_every_schedule_as_train_lr(data, tmp_path, schedule):
    """The CLI's LearningRateMonitor writes the learning rate under one tag whatever the schedule."""
    model = GlimpseModel(attention="soft", glimpses=2, hidden=16, what=8, where=8, glimpse_features=16,
                         schedule=schedule, lr=0.01)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=4, log_every_n_steps=1, limit_val_batches=1, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, logger=CSVLogger(tmp_path, name="log"),
                        callbacks=[LearningRateMonitor(logging_interval="step")])
    trainer.fit(model, datamodule=GlimpseData(root=data, batch_size=8, eval_batch_size=50))
    (path,) = tmp_path.rglob("metrics.csv")
    rows = list(csv.DictReader(path.open()))
    lrs = [float(r["train/lr"]) for r in rows if r.get("train/lr")]
    assert len(lrs) == 4 and lrs[0] == 0.01
    assert (lrs[-1] < lrs[0]) == (schedule != "constant")
    val = [r for r in rows if r.get("val/error")]
    assert len(val) == 1 and 0 <= float(val[0]["val/error"]) <= 1


class NoHostReads(L.Callback):
    """Fails any read of a tensor's value on the host (what waits for a GPU) during training steps
    that do not log; counts the steps it watched."""

    READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")

    def __init__(self, monkeypatch):
        self.monkeypatch, self.watched = monkeypatch, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if not module.logging_step():
            self.watched += 1
            for name in self.READS:
                self.monkeypatch.setattr(torch.Tensor, name, self.refuse(name))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.monkeypatch.undo()

    @staticmethod
    def refuse(name):
        def read(*args, **kwargs):
            raise AssertionError(f"Tensor.{name} read a value on the host inside a training step")
        return read


@pytest.mark.parametrize("kind, extra", [("hard", {"std_final": 0.05}), ("choice", {}),
                                         ("choice", {"estimator": "gumbel", "anneal": 1.0})])
def test_training_steps_that_do_not_log_read_nothing_from_the_device(data, monkeypatch, kind, extra):
    """On a GPU a host read waits for every queued kernel; the step must queue work and go on."""
    watch = NoHostReads(monkeypatch)
    model = GlimpseModel(attention=kind, glimpses=2, hidden=16, what=8, where=8, glimpse_features=16, **extra)
    trainer = L.Trainer(max_steps=4, log_every_n_steps=3, limit_val_batches=0, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, logger=False, callbacks=[watch])
    trainer.fit(model, datamodule=GlimpseData(root=data, batch_size=8))
    assert watch.watched == 3
