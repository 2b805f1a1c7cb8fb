"""One path is the primary measure of every kind, under one name; validation may draw fewer paths."""

from __future__ import annotations

import pytest

from glimpse.module import GlimpseModel


@pytest.mark.parametrize("kind, same_as", [("hard", "error_greedy"), ("choice", "error_greedy"), ("soft", "error")])
def test_one_path_error_is_greedy_for_stochastic_kinds_and_the_pass_for_soft(cli, kind, same_as):
    run = cli("--attention", kind, "--trainer.fast_dev_run=true", "--model.hidden=32")
    test = dict(run.trainer.callback_metrics)
    val = run.trainer.validate(run.model, datamodule=run.datamodule, verbose=False)[0]
    for stage, metrics in (("val", val), ("test", test)):
        assert float(metrics[f"{stage}/error_one_path"]) == float(metrics[f"{stage}/{same_as}"])


def test_validation_draws_val_samples_paths():
    model = GlimpseModel("hard", eval_samples=10, val_samples=1, train_samples=2)
    assert (model.samples("train"), model.samples("val"), model.samples("test")) == (2, 1, 10)
    assert GlimpseModel("hard", eval_samples=7).samples("val") == 7
    assert GlimpseModel("soft", val_samples=3).samples("val") == 1
