"""The LightningModule's training step: what it logs and when, its optimiser, its guard."""

from __future__ import annotations

import csv

import lightning as L
import torch
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
        opt = model.configure_optimizers()
        assert opt.defaults["fused"] is True, name
