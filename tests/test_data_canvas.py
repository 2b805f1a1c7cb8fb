"""compose(): the digit is where it says, clutter only adds, draws are reproducible and fast."""

from __future__ import annotations

import time

import pytest
import torch

from glimpse.data import compose


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def digits() -> torch.Tensor:
    return torch.randint(0, 256, (64, 28, 28), generator=seeded(1), dtype=torch.uint8)  # (B,28,28)


def crops(images: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The 28x28 squares at each (x, y), one image at a time (test-side reference, so a plain loop)."""
    return torch.stack([im[y : y + 28, x : x + 28] for im, (x, y) in zip(images, positions.tolist())])


def test_translated_digit_is_exactly_at_reported_position(digits):
    images, positions = compose(digits, 60, generator=seeded())
    assert images.shape == (64, 60, 60) and images.dtype == torch.uint8
    assert positions.shape == (64, 2) and positions.dtype == torch.int64
    assert positions.min() >= 0 and positions.max() <= 60 - 28
    assert torch.equal(crops(images, positions), digits)
    assert images.sum(dtype=torch.int64) == digits.sum(dtype=torch.int64)  # nothing outside the digit


def test_positions_cover_the_whole_range_uniformly():
    _, positions = compose(torch.zeros(6000, 28, 28, dtype=torch.uint8), 31, generator=seeded())
    for axis in positions.T:
        counts = torch.bincount(axis, minlength=4)
        assert len(counts) == 4 and counts.min() > 1300  # 0..3 all drawn, about 1500 each


def test_mnist_canvas_is_identity(digits):
    images, positions = compose(digits, 28, generator=seeded())
    assert torch.equal(images, digits) and not positions.any()


def test_clutter_only_adds_and_clips(digits):
    source = torch.randint(0, 256, (100, 28, 28), generator=seeded(2), dtype=torch.uint8)
    images, positions = compose(digits, 60, 4, 8, source, seeded(3))
    # the draws do not depend on pixel values: the same seed with blank digits gives the clutter alone
    clutter, same_positions = compose(torch.zeros_like(digits), 60, 4, 8, source, seeded(3))
    assert torch.equal(positions, same_positions) and clutter.any()
    cropped, clutter_under = crops(images, positions), crops(clutter, positions)
    assert (cropped >= digits).all()
    assert torch.equal(cropped[clutter_under == 0], digits[clutter_under == 0])
    expected = (clutter_under.int() + digits.int()).clamp(max=255).to(torch.uint8)
    assert torch.equal(cropped, expected)


def test_fragments_have_the_requested_count_and_size():
    ones = torch.ones(10, 28, 28, dtype=torch.uint8)
    blank = torch.zeros(500, 28, 28, dtype=torch.uint8)
    images, _ = compose(blank, 60, 5, 7, ones, seeded())
    assert (images.sum(dim=(1, 2)) == 5 * 7 * 7).all()  # sums add where fragments overlap


def test_overlap_saturates_instead_of_wrapping():
    full = torch.full((50, 28, 28), 200, dtype=torch.uint8)
    images, _ = compose(full, 28, 1, 8, full, seeded())  # the digit fills the canvas
    assert ((images == 255).sum(dim=(1, 2)) == 64).all() and ((images == 200).sum(dim=(1, 2)) == 784 - 64).all()


def test_fragments_are_crops_of_the_source():
    source = (torch.arange(784).reshape(1, 28, 28) % 250 + 1).to(torch.uint8)  # no zero pixel
    images, _ = compose(torch.zeros(200, 28, 28, dtype=torch.uint8), 100, 1, 5, source, seeded())
    windows = source[0].unfold(0, 5, 1).unfold(1, 5, 1).reshape(-1, 25)  # every 5x5 crop of the source
    for image in images:  # a lone fragment on a blank canvas: its bounding box is one crop
        ys, xs = image.nonzero(as_tuple=True)
        piece = image[ys.min() : ys.min() + 5, xs.min() : xs.min() + 5].reshape(1, 25)
        assert (windows == piece).all(dim=1).any()


def test_same_generator_same_images_different_seed_different_images(digits):
    source = digits.flip(0)
    first = compose(digits, 60, 4, 8, source, seeded(5))
    assert all(torch.equal(a, b) for a, b in zip(first, compose(digits, 60, 4, 8, source, seeded(5))))
    assert not torch.equal(first[0], compose(digits, 60, 4, 8, source, seeded(6))[0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(canvas=27), "canvas must be >= 28"),
        (dict(canvas=60, fragments=-1), "fragments >= 0"),
        (dict(canvas=60, fragments=2, fragment_size=29), "fragment_size <= 28"),
        (dict(canvas=60, fragments=2), "fragment_source"),
    ],
)
def test_bad_arguments_are_refused(digits, kwargs, message):
    with pytest.raises(ValueError, match=message):
        compose(digits, **kwargs)


def test_cluttered_60_is_fast_enough():
    """The brief: >= 20,000 cluttered 60x60 images/s in batches of 128 on a 2-core CPU."""
    source = torch.randint(0, 256, (5000, 28, 28), generator=seeded(), dtype=torch.uint8)
    batches = [source[torch.randint(5000, (128,), generator=seeded(i))] for i in range(50)]
    best = 0.0
    # CPU time of this thread, one intra-op thread: the brief is about the code's cost, and wall-clock
    # windows measured the machine's load instead (2,424 images/s in CI beside two training runs,
    # 79,760 idle). One thread for a two-core figure makes the check stricter, not looser.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(3):
            for i in range(0, len(batches), 5):
                start = time.thread_time()
                for batch in batches[i:i + 5]:
                    compose(batch, 60, 4, 8, source)
                best = max(best, 5 * 128 / max(time.thread_time() - start, 1e-9))
    finally:
        torch.set_num_threads(threads)
    assert best >= 20_000, f"{best:.0f} images/s of one thread's CPU time"
