"""Lightning data module for MNIST, translated MNIST and cluttered MNIST."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from glimpse.checks import require
from glimpse.data.canvas import DIGIT, compose
from glimpse.data.mnist_source import ensure_mnist, load_mnist

DATASETS = ("mnist", "translated", "cluttered")
TRAIN_SIZE = 60_000
CHUNK = 1000  # val/test are generated in fixed-size chunks: bounded memory, and the images do not
# depend on any batch size setting


def to_float(images: Tensor) -> Tensor:
    """uint8 (B,H,W) -> float32 (B,1,H,W) in [0,1] (byte/255)."""
    return images.unsqueeze(1).float().div_(255)


def keep_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """collate_fn for datasets whose __getitems__ already returns a whole batch."""
    return batch


class EpochShuffle(Sampler[int]):
    """A fresh permutation each epoch, drawn from (seed, epoch) alone.

    Why not RandomSampler: it draws from the global RNG at a moment Lightning decides, so a run
    resumed from a checkpoint would see other batches than the uninterrupted run. Lightning calls
    ``set_epoch`` before every epoch (and wraps this sampler for distributed training).
    """

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        order = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % 2**63)
        return iter(torch.randperm(self.size, generator=order).tolist())


class FreshCanvases(Dataset):
    """Digits placed anew for every batch: every training batch sees new positions and clutter.

    A batch's placements are drawn from a generator seeded by (salt, the batch's indices), not
    from the global RNG: they are the same whatever ran before and in any DataLoader worker, and
    they change every epoch because the shuffled batches do.
    """

    def __init__(self, digits: Tensor, labels: Tensor, canvas: int, fragments: int, fragment_size: int, salt: int = 0,
                 shift: int = 0):
        self.digits, self.labels = digits, labels  # (N,28,28) uint8, (N,) int64; also the clutter
        self.canvas, self.fragments, self.fragment_size, self.salt = canvas, fragments, fragment_size, salt
        self.shift = shift  # mnist: move each digit by up to +-shift pixels (a 28x28 window of a wider canvas)

    def __len__(self) -> int:
        return len(self.labels)

    def compose(self, indices: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """uint8 images (B,canvas,canvas) and digit top-left (x, y) (B,2) for these indices."""
        s = self.shift
        images, corners = compose(self.digits[indices], self.canvas + 2 * s, self.fragments, self.fragment_size,
                                  self.digits, generator)
        return images[:, s : s + self.canvas, s : s + self.canvas], corners - s

    def render(self, generator: torch.Generator) -> FixedCanvases:
        """Place every digit once, in fixed-size chunks, for a deterministic evaluation set."""
        parts = [self.compose(chunk, generator) for chunk in torch.arange(len(self)).split(CHUNK)]
        images, positions = (torch.cat(p) for p in zip(*parts))
        return FixedCanvases(images, self.labels, positions)

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        draws = torch.Generator().manual_seed(hash((self.salt, *indices)) % 2**63)  # int hashes are stable
        images, _ = self.compose(torch.as_tensor(indices), draws)
        return to_float(images), self.labels[indices]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        images, labels = self.__getitems__([index])
        return images[0], labels[0]


class FixedCanvases(Dataset):
    """Images generated once (validation/test), kept as uint8 with their digit positions."""

    def __init__(self, images: Tensor, labels: Tensor, positions: Tensor):
        self.images, self.labels, self.positions = images, labels, positions  # (N,H,W), (N,), (N,2)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        return to_float(self.images[indices]), self.labels[indices]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return to_float(self.images[index : index + 1])[0], self.labels[index]


class GlimpseData(L.LightningDataModule):
    """MNIST (28x28), translated MNIST or cluttered MNIST (digit on a larger blank/cluttered canvas).

    Batches are (images float32 (B,1,H,W) in [0,1], labels int64 (B,)). Training images get fresh
    placements (and clutter) for every batch, drawn from the global seed (``seed_everything``),
    the epoch and the batch, so a resumed run sees the same batches; validation and test images
    are generated once in `setup` from `seed`, so they are byte-identical on every run and machine.

    Args:
        dataset: "mnist", "translated" (digit at a random spot of a blank canvas) or "cluttered"
            (as translated, plus random digit fragments).
        root: data folder; MNIST is cached in `<root>/MNIST/raw` (fetched by `prepare_data`).
        canvas: side of the square canvas in pixels for translated/cluttered (ignored for mnist).
        fragments: number of clutter fragments per image (cluttered only).
        fragment_size: side of each square clutter fragment, cropped from a random digit.
        batch_size: training batch size.
        val_size: images split off the 60,000 training images for validation.
        seed: seeds the train/validation split and the validation/test images.
        num_workers: DataLoader worker processes (0: load in the main process).
        eval_batch_size: validation/test batch size.
        shift: mnist only: each training digit is moved by a fresh random offset of up to +-shift
            pixels in x and y (zero fill; 0: none). Validation and test images stay unshifted.
    """

    num_classes = 10
    channels = 1  # grey images: batches are (B, 1, H, W)

    def __init__(
        self,
        dataset: str = "mnist",
        root: str = "data",
        canvas: int = 60,
        fragments: int = 4,
        fragment_size: int = 8,
        batch_size: int = 128,
        val_size: int = 5000,
        seed: int = 0,
        num_workers: int = 0,
        eval_batch_size: int = 1000,
        shift: int = 0,
    ):
        super().__init__()
        checks = [
            ("dataset", dataset, dataset in DATASETS, f"one of {', '.join(DATASETS)}"),
            ("canvas", canvas, canvas >= DIGIT, f"an integer >= {DIGIT} (the digit size)"),
            ("fragments", fragments, fragments >= 0, "an integer >= 0"),
            ("fragment_size", fragment_size, 1 <= fragment_size <= DIGIT, f"an integer in 1..{DIGIT}"),
            ("batch_size", batch_size, batch_size >= 1, "an integer >= 1"),
            ("val_size", val_size, 1 <= val_size < TRAIN_SIZE, f"an integer in 1..{TRAIN_SIZE - 1}"),
            ("num_workers", num_workers, num_workers >= 0, "an integer >= 0"),
            ("eval_batch_size", eval_batch_size, eval_batch_size >= 1, "an integer >= 1"),
            ("shift", shift, 0 <= shift < DIGIT // 2, f"an integer in 0..{DIGIT // 2 - 1}"),
            ("shift", shift, shift == 0 or dataset == "mnist",
             f"0 for dataset={dataset!r} (its digits are already placed at random)"),
        ]
        for name, value, ok, allowed in checks:
            require(ok, f"data.{name}", value, allowed)
        self.save_hyperparameters()
        self.train_set: FreshCanvases | None = None
        self.val_set: FixedCanvases | None = None
        self.test_set: FixedCanvases | None = None

    @property
    def image_size(self) -> int:
        return DIGIT if self.hparams.dataset == "mnist" else self.hparams.canvas

    def _canvases(self, digits: Tensor, labels: Tensor, shift: int = 0) -> FreshCanvases:
        h = self.hparams
        fragments = h.fragments if h.dataset == "cluttered" else 0
        return FreshCanvases(digits, labels, self.image_size, fragments, h.fragment_size, shift=shift)

    def prepare_data(self) -> None:
        ensure_mnist(self.hparams.root)

    def setup(self, stage: str | None = None) -> None:
        if self.test_set is not None:
            return
        h = self.hparams
        mnist = load_mnist(h.root)
        images, labels = mnist["train"]
        split = torch.Generator().manual_seed(h.seed)
        order = torch.randperm(TRAIN_SIZE, generator=split)  # val = first val_size, train = the rest
        val_idx, train_idx = order[: h.val_size], order[h.val_size :]
        # val and test get their own streams, derived from seed but not from val_size
        val_seed, test_seed = torch.randint(2**62, (2,), generator=split).tolist()
        self.train_set = self._canvases(images[train_idx], labels[train_idx], shift=h.shift)
        val = self._canvases(images[val_idx], labels[val_idx])
        self.val_set = val.render(torch.Generator().manual_seed(val_seed))
        self.test_set = self._canvases(*mnist["test"]).render(torch.Generator().manual_seed(test_seed))

    def _loader(self, dataset: Dataset, batch_size: int, sampler: Sampler | None = None) -> DataLoader:
        workers = self.hparams.num_workers
        # its own generator: creating an iterator then leaves the global RNG alone (exact resume)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                          collate_fn=keep_batch, pin_memory=False, persistent_workers=workers > 0,
                          generator=torch.Generator().manual_seed(self.hparams.seed))

    def train_dataloader(self) -> DataLoader:
        seed = torch.initial_seed()  # what seed_everything set: the run's seed
        self.train_set.salt = seed
        return self._loader(self.train_set, self.hparams.batch_size, EpochShuffle(len(self.train_set), seed))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.hparams.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.hparams.eval_batch_size)
