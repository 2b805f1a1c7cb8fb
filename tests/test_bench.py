"""The speed benchmark: a real cell under each precision, and a bad precision refused up front."""

from __future__ import annotations

import pytest
import torch

from glimpse import bench


@pytest.mark.parametrize("precision, ran", [("32-true", "32-true"), ("bf16-mixed", "bf16-mixed"),
                                            ("16-mixed", "bf16-mixed")])  # Lightning runs float16 autocast as bf16 on CPU
def test_one_cell_trains_and_evaluates(data, precision, ran):
    """The row records the precision that ran, not the one asked for."""
    row = bench.measure("hard", "mnist", None, steps=2, warmup=1, batch=16, root=data, precision=precision)
    assert row["precision"] == ran and row["device"] == "cpu"
    assert row["train_img_s"] > 0 and row["eval_img_s"] > 0
    assert (row["pixels"], row["glimpses"]) == (6 * 8 * 8, 6)


def test_autocast_reaches_the_evaluation(monkeypatch, data):
    """bf16-mixed must time evaluation under the same autocast as training, or the two figures differ in kind."""
    seen = []
    original = bench.GlimpseModel.predict_proba

    def spy(self, images, samples):
        seen.append(torch.is_autocast_enabled("cpu"))
        return original(self, images, samples)

    monkeypatch.setattr(bench.GlimpseModel, "predict_proba", spy)
    bench.measure("hard", "mnist", None, steps=1, warmup=1, batch=16, root=data, precision="bf16-mixed")
    assert seen and all(seen)


def test_unknown_precision_is_refused_before_any_work(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--precision", "8-true"])
    err = capsys.readouterr().err
    assert "'8-true'" in err and "bf16-mixed" in err
