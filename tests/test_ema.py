"""The weight average (``glimpse.callbacks.WeightEMA``): what is validated is what is saved and tested,
and a run cut after an epoch resumes to the same average."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from glimpse.checkpoints import load_model
from tests.test_resume import final_metrics

EMA = ["--trainer.callbacks+=glimpse.callbacks.WeightEMA", "--trainer.callbacks.decay=0.9"]
SHORT = ["--attention=hard", "--trainer.max_epochs=2", "--trainer.limit_train_batches=8", "--trainer.limit_val_batches=2",
         "--trainer.limit_test_batches=2", "--data.eval_batch_size=250", "--model.eval_samples=2"]


class CutAtSecondEpoch(L.Callback):
    """Interrupts training as the second epoch starts (after the first epoch's checkpoints)."""

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == 1:
            raise KeyboardInterrupt


class Probe(L.Callback):
    """Keeps the weights the last validation ran with."""

    def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking and batch_idx == 0:
            self.validated = weights(module)


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.slow
def test_the_average_is_validated_saved_and_tested(cli):
    run = cli(*SHORT, *EMA, "--trainer.callbacks+=tests.test_ema.Probe")
    probe = next(c for c in run.trainer.callbacks if isinstance(c, Probe))
    last = torch.load(Path(run.trainer.checkpoint_callback.dirpath) / "last.ckpt", map_location="cpu", weights_only=True)
    average, raw = last["state_dict"], last["current_model_state"]
    assert any(not torch.equal(average[k], raw[k]) for k in raw), "the saved average equals the raw weights"
    assert all(torch.equal(probe.validated[k], average[k]) for k in average), "validation did not run on the average"
    best = run.trainer.checkpoint_callback.best_model_path
    average = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    tested = weights(run.model)  # the weights the final test ran with
    assert all(torch.equal(tested[k], average[k]) for k in average), "the test did not run on the saved average"
    model, _ = load_model(best)  # what glimpse.evaluate tests
    assert all(torch.equal(v, average[k]) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_a_cut_run_resumes_to_the_same_average(cli):
    whole = cli(*SHORT, *EMA, "--trainer.logger.init_args.name=whole")
    with pytest.raises(SystemExit):
        cli(*SHORT, *EMA, "--trainer.logger.init_args.name=cut", "--trainer.callbacks+=tests.test_ema.CutAtSecondEpoch")
    resumed = cli(*SHORT, *EMA, "--trainer.logger.init_args.name=cut", "--ckpt_path=last")
    assert resumed.trainer.current_epoch == 2
    a, b = weights(whole.model), weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert final_metrics(whole) == final_metrics(resumed)
