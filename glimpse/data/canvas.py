"""Vectorised placement of MNIST digits on larger canvases: translated and cluttered MNIST.

Whole batches go through a handful of torch ops (no per-image Python loop), and all arithmetic is
integer (uint8 in, int16 sums, uint8 out), so one generator state gives byte-identical images on
every machine. The random draws never depend on pixel values, only on shapes and the generator.
"""

from __future__ import annotations

import torch
from torch import Tensor

DIGIT = 28  # MNIST digits are 28 x 28


def _patches(top: Tensor, left: Tensor, size: int, width: int) -> Tensor:
    """Flat indices (..., size, size) of the size x size squares at (top, left) in rows of `width`."""
    r = torch.arange(size)
    return (top[..., None, None] + r[:, None]) * width + left[..., None, None] + r


def compose(
    digits: Tensor,
    canvas: int,
    fragments: int = 0,
    fragment_size: int = 8,
    fragment_source: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Place each digit (B,28,28 uint8) at a uniformly random spot of a blank `canvas` square.

    With `fragments` = K > 0 the canvas is first cluttered, as DeepMind's mnist-cluttered did: K
    random `fragment_size` crops of random digits of `fragment_source` (N,28,28 uint8; use the same
    split) at uniformly random spots. Overlapping pixels add up and clip at 255.
    Returns images (B,canvas,canvas) uint8 and each digit's top-left corner (B,2) int64 as (x, y).
    """
    if digits.dtype != torch.uint8 or digits.shape[1:] != (DIGIT, DIGIT):
        raise ValueError(f"digits must be uint8 (B,28,28), got {digits.dtype} {tuple(digits.shape)}")
    if canvas < DIGIT:
        raise ValueError(f"canvas must be >= {DIGIT}, got {canvas}")
    if fragments < 0 or not 1 <= fragment_size <= DIGIT:
        raise ValueError(f"need fragments >= 0 and 1 <= fragment_size <= 28, got {fragments}, {fragment_size}")
    b, k, s = digits.shape[0], fragments, fragment_size
    if canvas == DIGIT and k == 0:  # one place only (plain MNIST): nothing to compose, nothing to draw
        return digits.clone(), digits.new_zeros(b, 2, dtype=torch.int64)
    # int16 holds (K+1)*255 for K < 128; more clutter than that needs int32
    sums = torch.zeros(b, canvas * canvas, dtype=torch.int16 if k < 128 else torch.int32)
    if k:
        if fragment_source is None or len(fragment_source) == 0:
            raise ValueError("fragments > 0 needs a non-empty fragment_source (N,28,28)")
        which = torch.randint(len(fragment_source), (b, k), generator=generator)  # (B,K)
        crop = torch.randint(DIGIT - s + 1, (2, b, k), generator=generator)  # (2,B,K) top, left
        spot = torch.randint(canvas - s + 1, (2, b, k), generator=generator)  # (2,B,K) top, left
        pieces = fragment_source.reshape(-1)[which[..., None, None] * DIGIT**2 + _patches(*crop, s, DIGIT)]
        sums.scatter_add_(1, _patches(*spot, s, canvas).view(b, -1), pieces.view(b, -1).to(sums.dtype))
    top, left = torch.randint(canvas - DIGIT + 1, (2, b), generator=generator)  # (B,) each
    sums.scatter_add_(1, _patches(top, left, DIGIT, canvas).view(b, -1), digits.reshape(b, -1).to(sums.dtype))
    images = sums.clamp_(max=255).to(torch.uint8).view(b, canvas, canvas)
    return images, torch.stack([left, top], dim=1)
