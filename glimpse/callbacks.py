"""Callbacks: per-epoch seeding (exact resume), TensorBoard pictures and checkpoints that stay in their
run folder, which the CLI always adds, and an exponential moving average of the weights, which a run
may add."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only

from glimpse.checks import require
from glimpse.draw import patch_table, rollout_for_pictures, step_frames, table


class AttentionPictures(L.Callback):
    """Logs where the model looks on the first ``count`` validation images (the same every epoch).

    Tags: ``pictures/steps`` (a row per image, a column per step, see ``glimpse.draw``),
    ``pictures/patches`` (hard: the glimpses as the network sees them), and histograms
    ``locations/x/step<t>`` and ``locations/y/step<t>`` of the locations on the whole first
    validation batch.
    Pictures use the global step, so a resumed run continues the same timeline. Does nothing
    without a TensorBoardLogger, and only on rank zero.

    Args:
        count: validation images to draw (the first ones of the fixed validation set).
        every_n_epochs: draw every this many validation epochs.
    """

    def __init__(self, count: int = 8, every_n_epochs: int = 1):
        require(count >= 1, "pictures.count", count, "an integer >= 1")
        require(every_n_epochs >= 1, "pictures.every_n_epochs", every_n_epochs, "an integer >= 1")
        self.count, self.every_n_epochs = count, every_n_epochs
        self.batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def fixed_images(self, trainer: L.Trainer) -> tuple[torch.Tensor, torch.Tensor]:
        if self.batch is None:
            loader = trainer.val_dataloaders
            images, labels = next(iter(loader[0] if isinstance(loader, list) else loader))
            self.batch = images.cpu(), labels.cpu()
        return self.batch

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        logger = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if logger is None or trainer.sanity_checking or trainer.current_epoch % self.every_n_epochs:
            return
        images, labels = self.fixed_images(trainer)
        net, n = module.net, self.count
        out = rollout_for_pictures(net, images.to(module.device)).to("cpu")
        board, step = logger.experiment, trainer.global_step
        for t in range(out.locations.shape[1]):
            board.add_histogram(f"locations/x/step{t + 1}", out.locations[:, t, 0], step)  # steps count from 1
            board.add_histogram(f"locations/y/step{t + 1}", out.locations[:, t, 1], step)
        out = rollout_for_pictures(net, images[:n].to(module.device)).to("cpu")
        board.add_image("pictures/steps", table(step_frames(net, images[:n], out, labels[:n])), step)
        if out.patches is not None:
            board.add_image("pictures/patches", patch_table(out.patches), step)


class EpochSeed(L.Callback):
    """Reseeds every random generator at the start of each training epoch from (seed, epoch), and
    at the start of testing from the seed alone.

    Why: an epoch's batch order, canvases and sampled glimpses then depend only on the weights and
    the epoch number, not on what ran before (a sanity check, a crash), so a run resumed from an
    epoch-end checkpoint continues exactly as the uninterrupted run would have. The test's sampled
    glimpses likewise depend only on the tested weights, also when a run killed after its last
    checkpoint is resumed and only tests. The seed is the one given to ``seed_everything`` (the
    CLI's ``--seed_everything``).
    """

    def __init__(self):
        self.base: int | None = None

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        if self.base is None:  # read once: seed_everything below rewrites the variable
            self.base = int(os.environ.get("PL_GLOBAL_SEED", 0))

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        L.seed_everything((self.base * 100_003 + trainer.current_epoch) % 2**32, workers=True, verbose=False)

    def on_test_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        L.seed_everything(self.base % 2**32, workers=True, verbose=False)


class WeightEMA(EMAWeightAveraging):
    """Validates, checkpoints and tests an exponential moving average of the weights.

    Why: the hard model's validation error jitters from epoch to epoch with the policy's sampled
    updates; an average over the last ~1/(1 - decay) steps removes most of that and lowers the error
    in the middle of a run (not at its end, where the annealed learning rate has already stilled the
    weights; docs/results.md, "Time to accuracy"). Training itself runs on the raw weights.

    Lightning's ``EMAWeightAveraging`` does the averaging (validation swaps the average in; saved
    checkpoints hold it as their weights, so ``glimpse.evaluate`` tests it too). One change: when
    a finished fit tests its best checkpoint, Lightning's callback would reload that checkpoint's
    raw weights over the average it validated and chose; here testing keeps the average.

    Add it with ``--trainer.callbacks+=glimpse.callbacks.WeightEMA --trainer.callbacks.decay 0.999``.

    Args:
        decay: weight of the old average at each optimiser step, in (0, 1); 0.999 averages over
            about the last 1,000 steps (2.3 epochs of 28x28 MNIST at batch 128).
    """

    def __init__(self, decay: float = 0.999):
        require(0 < decay < 1, "WeightEMA.decay", decay, "a number between 0 and 1 (exclusive), such as 0.999")
        super().__init__(decay=decay)

    def on_load_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn == TrainerFn.FITTING:  # resuming: raw weights to train on, average to go on with
            super().on_load_checkpoint(trainer, module, checkpoint)


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, resumed safely in a run folder that was moved or renamed, and
    naming epochs from 1, as every other output of the project does (``best-epoch001.ckpt`` holds
    the weights after the first epoch).

    Why: a checkpoint remembers its best and last files by the paths they had when it was saved.
    Resumed after its run folder was moved, Lightning would take the best file at the old path
    (by then perhaps another run's) as this run's best: it would test that file at the end, and
    delete it when a better epoch came. Here those paths are moved into this run's own checkpoint
    folder, where the files went with the folder; when they are not there (a checkpoint copied out
    of its run starts a new one), the record of past best files is dropped and the run tracks
    its best afresh.
    """

    def format_checkpoint_name(self, metrics: dict, *args, **kwargs) -> str:
        if "epoch" in metrics:  # Lightning's epoch counter starts at 0
            metrics = {**metrics, "epoch": metrics["epoch"] + 1}
        return super().format_checkpoint_name(metrics, *args, **kwargs)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("dirpath")
        if saved is None or self.dirpath is None or Path(saved).absolute() == Path(self.dirpath).absolute():
            return super().load_state_dict(state_dict)
        here = Path(self.dirpath)

        def moved(path: str) -> str:
            return str(here / Path(path).name) if path and Path(path).parent == Path(saved) else path

        best = moved(state_dict.get("best_model_path", ""))
        if not best or not Path(best).is_file():
            return  # none of the old run's files are here: start tracking afresh
        state = {**state_dict, "dirpath": self.dirpath, "best_model_path": best,
                 "kth_best_model_path": moved(state_dict.get("kth_best_model_path", "")),
                 "last_model_path": moved(state_dict.get("last_model_path", "")),
                 "best_k_models": {moved(k): v for k, v in state_dict.get("best_k_models", {}).items()}}
        super().load_state_dict(state)
