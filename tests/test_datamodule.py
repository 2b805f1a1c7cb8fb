"""GlimpseData: argument checks, batch format, digit positions, determinism, Lightning and CLI use."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from jsonargparse import ArgumentParser

from glimpse.data import GlimpseData, load_mnist

CANVAS = {"mnist": 28, "translated": 60, "cluttered": 60}


@pytest.fixture(scope="module")
def mnist(data: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return load_mnist(data)


def ready(data: str, **kwargs) -> GlimpseData:
    module = GlimpseData(root=data, **kwargs)
    module.prepare_data()
    module.setup("fit")
    return module


@pytest.fixture(scope="module", params=list(CANVAS))
def module(request, data: str) -> GlimpseData:
    return ready(data, dataset=request.param)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dataset="fashion"), "data.dataset='fashion' is not allowed: expected one of mnist, translated, cluttered"),
        (dict(canvas=27), "data.canvas=27 is not allowed: expected an integer >= 28"),
        (dict(fragments=-1), "fragments=-1 is not allowed"),
        (dict(fragment_size=0), "data.fragment_size=0 is not allowed: expected an integer in 1..28"),
        (dict(fragment_size=29), "fragment_size=29"),
        (dict(batch_size=0), "batch_size=0"),
        (dict(val_size=0), "val_size=0"),
        (dict(val_size=60_000), "data.val_size=60000 is not allowed: expected an integer in 1..59999"),
        (dict(num_workers=-2), "num_workers=-2"),
        (dict(eval_batch_size=0), "eval_batch_size=0"),
        (dict(shift=-1), "data.shift=-1 is not allowed: expected an integer in 0..13"),
        (dict(dataset="translated", shift=2), "data.shift=2 is not allowed: expected 0 for dataset='translated'"),
    ],
)
def test_bad_arguments_fail_before_touching_disk(tmp_path: Path, kwargs, message):
    root = tmp_path / "never"
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        GlimpseData(root=str(root), **kwargs)
    assert not root.exists()


def test_construction_alone_writes_nothing(tmp_path: Path):
    module = GlimpseData("cluttered", root=str(tmp_path / "later"), canvas=100)
    assert not (tmp_path / "later").exists()
    assert module.image_size == 100 and module.num_classes == 10
    assert GlimpseData("mnist", canvas=100).image_size == 28


def test_batches_have_the_documented_format(module: GlimpseData):
    size = CANVAS[module.hparams.dataset]
    loaders = [(module.train_dataloader(), 128), (module.val_dataloader(), 1000), (module.test_dataloader(), 1000)]
    for loader, batch_size in loaders:
        images, labels = next(iter(loader))
        assert images.shape == (batch_size, 1, size, size) and images.dtype == torch.float32
        assert 0 <= images.min() and images.max() <= 1 and images.max() > 0.9
        assert torch.equal(images * 255, (images * 255).round())  # exactly byte/255
        assert labels.shape == (batch_size,) and labels.dtype == torch.int64
        assert 0 <= labels.min() and labels.max() <= 9
    assert (len(module.train_set), len(module.val_set), len(module.test_set)) == (55_000, 5000, 10_000)


def test_digits_and_labels_are_where_the_module_says(module: GlimpseData, mnist):
    images, labels = mnist["train"]
    val_idx = torch.randperm(60_000, generator=torch.Generator().manual_seed(0))[:5000]
    expected = {"val": (images[val_idx], labels[val_idx]), "test": mnist["test"]}
    for name, fixed in (("val", module.val_set), ("test", module.test_set)):
        digits, digit_labels = expected[name]
        assert torch.equal(fixed.labels, digit_labels)
        x, y = fixed.positions[:, :1, None], fixed.positions[:, 1:, None]  # (N,1,1) each
        rows, cols = y + torch.arange(28)[:, None], x + torch.arange(28)  # (N,28,1), (N,28,28)
        crops = fixed.images[torch.arange(len(digits))[:, None, None], rows, cols]  # (N,28,28)
        if module.hparams.dataset == "cluttered":
            assert (crops >= digits).all() and (fixed.images.sum((1, 2)) > crops.sum((1, 2))).float().mean() > 0.9
        else:
            assert torch.equal(crops, digits) and torch.equal(fixed.images.sum((1, 2)), crops.sum((1, 2)))
    train_digits = torch.randperm(60_000, generator=torch.Generator().manual_seed(0))[5000:]
    assert torch.equal(module.train_set.digits, images[train_digits])  # also the training clutter


def test_shift_moves_training_digits_only_and_by_at_most_shift(data: str, mnist):
    module = ready(data, dataset="mnist", shift=3)
    plain = ready(data, dataset="mnist")
    assert torch.equal(module.val_set.images, plain.val_set.images)  # evaluation is never shifted
    assert torch.equal(module.test_set.images, plain.test_set.images)
    indices = torch.arange(2000)
    shifted, corners = module.train_set.compose(indices, torch.Generator().manual_seed(0))
    assert shifted.shape == (2000, 28, 28) and corners.abs().max() == 3 and corners.min() < 0 < corners.max()
    digits = module.train_set.digits[indices]
    padded = torch.nn.functional.pad(digits, (3, 3, 3, 3))  # the digit at offset (dx, dy) = this window
    for i in range(0, 2000, 97):
        dx, dy = corners[i].tolist()
        assert torch.equal(shifted[i], padded[i, 3 - dy : 31 - dy, 3 - dx : 31 - dx])
    unshifted, zero = plain.train_set.compose(indices, torch.Generator().manual_seed(0))
    assert torch.equal(unshifted, digits) and not zero.any()


def test_eval_images_are_deterministic_and_follow_the_seed(data: str):
    first, again = ready(data, dataset="cluttered"), ready(data, dataset="cluttered")
    other = ready(data, dataset="cluttered", seed=1)
    for name in ("val_set", "test_set"):
        a, b, c = (getattr(m, name) for m in (first, again, other))
        assert torch.equal(a.images, b.images) and torch.equal(a.positions, b.positions)
        assert a.images.dtype == torch.uint8 and not torch.equal(a.images, c.images)
    smaller_val = ready(data, dataset="cluttered", val_size=1000)
    assert torch.equal(first.test_set.images, smaller_val.test_set.images)  # test does not hang on val_size


@pytest.mark.parametrize("workers", [0, 2])
def test_training_batches_are_fresh_yet_reproducible(data: str, workers: int):
    module = ready(data, dataset="cluttered", num_workers=workers)
    epochs = []
    for seed in (7, 7, 8):
        L.seed_everything(seed, verbose=False)
        epochs.append(next(iter(module.train_dataloader()))[0])
    assert torch.equal(epochs[0], epochs[1]) and not torch.equal(epochs[0], epochs[2])
    indices = torch.arange(16)
    assert not torch.equal(module.train_set.compose(indices)[0], module.train_set.compose(indices)[0])


class Probe(L.LightningModule):
    """The smallest model that proves a Trainer consumes the data module."""

    def __init__(self, size: int):
        super().__init__()
        self.layer = torch.nn.Linear(size * size, 10)
        self.seen: list[tuple[int, ...]] = []

    def step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, labels = batch
        self.seen.append(tuple(images.shape))
        return torch.nn.functional.cross_entropy(self.layer(images.flatten(1)), labels)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.step(batch)

    validation_step = test_step = training_step

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_trainer_runs_on_it(data: str):
    module = GlimpseData("cluttered", root=data, canvas=40, batch_size=32, eval_batch_size=50)
    probe = Probe(module.image_size)
    trainer = L.Trainer(fast_dev_run=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(probe, datamodule=module)
    trainer.test(probe, datamodule=module)
    assert probe.seen == [(32, 1, 40, 40)] * 2 + [(50, 1, 40, 40)] * 2 + [(50, 1, 40, 40)] * 2


def test_cli_reads_types_and_docstring():
    parser = ArgumentParser()
    parser.add_class_arguments(GlimpseData, "data")
    config = parser.parse_args(["--data.dataset=cluttered", "--data.canvas=100", "--data.fragments=8"])
    assert (config.data.dataset, config.data.canvas, config.data.fragments, config.data.batch_size) == (
        "cluttered", 100, 8, 128)
    assert "side of the square canvas" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--data.canvas=wide"])
