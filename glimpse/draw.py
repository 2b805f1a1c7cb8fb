"""Pictures of where a model looked: one frame per step, for TensorBoard and for files.

Every kind gets the same layout, a (B, T) table of frames, so a reader compares them at a glance:
frame t shows the locations of steps 0..t joined into a path; hard and choice attention add the
boxes they read at step t (k nested squares for a hard glimpse); soft and choice add the weights
of step t as a red heat map upsampled to the canvas. A caption box names prediction and truth
(green when right, red when wrong).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_keypoints, make_grid

from glimpse.models import AttentionNet, Rollout

MIN_SIDE = 168  # pixels: canvases are enlarged by an integer factor to at least this


def to_pixels(loc: Tensor, size: int, zoom: int) -> Tensor:
    """Image-normalised (x, y) in [-1, 1] -> pixel coordinates of the enlarged picture."""
    return (loc + 1) * (size * zoom / 2)


def step_frames(net: AttentionNet, images: Tensor, out: Rollout, labels: Tensor) -> Tensor:
    """images (B, C, H, W) in [0, 1] and their rollout -> frames (B, T, 3, H*z, W*z) uint8."""
    b, _, size, _ = images.shape
    zoom = max(1, math.ceil(MIN_SIDE / size))
    base = F.interpolate(images[:, :1], scale_factor=zoom, mode="nearest").clamp(0, 1)  # (B, 1, Hz, Wz)
    heat = None
    if out.weights is not None:  # (B, T, n, n) -> (B, T, Hz, Wz), each step scaled to its maximum
        w = out.weights / out.weights.amax((2, 3), keepdim=True).clamp_min(1e-12)
        heat = F.interpolate(w, size=base.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)
    centres = to_pixels(out.locations, size, zoom)  # (B, T, 2)
    predicted = out.logits.argmax(-1)
    widths = [net.retina.patch * f * zoom for f in net.retina.factors]
    colours = step_colours(net.glimpses)
    frames = torch.empty(b, net.glimpses, 3, *base.shape[-2:], dtype=torch.uint8)
    for i in range(b):
        grey = base[i].expand(3, -1, -1)
        right = bool(predicted[i] == labels[i])
        for t in range(net.glimpses):
            picture = grey.clone()
            if heat is not None:  # red where the weight is high
                picture = picture * (1 - 0.6 * heat[i, t]) + torch.tensor([0.6, 0, 0])[:, None, None] * heat[i, t]
            picture = (picture * 255).to(torch.uint8)
            picture = draw_bounding_boxes(picture, torch.tensor([[0, 0, picture.shape[-1] - 1, picture.shape[-2] - 1]]),
                                          labels=[f"pred {int(predicted[i])} true {int(labels[i])}"],
                                          colors="lime" if right else "red")
            if net.stochastic:  # the squares this step read
                c = centres[i, t]
                boxes = torch.stack([torch.cat([c - w / 2, c + w / 2]) for w in widths])
                picture = draw_bounding_boxes(picture, boxes, labels=[str(t + 1)] + [""] * (len(widths) - 1),
                                              colors=colours[t], width=2)
            picture = draw_keypoints(picture, centres[i, None, : t + 1], colors=colours[t], radius=3, width=2,
                                     connectivity=[(s, s + 1) for s in range(t)])
            frames[i, t] = picture
    return frames


def step_colours(steps: int) -> list[tuple[int, int, int]]:
    """From yellow (first step) to cyan (last): the order of the glimpses, readable on grey and red."""
    return [(int(255 * (1 - s / max(1, steps - 1))), 255, int(255 * s / max(1, steps - 1))) for s in range(steps)]


def table(frames: Tensor) -> Tensor:
    """(B, T, 3, H, W) -> one (3, H', W') picture: a row per image, a column per step."""
    return make_grid(frames.flatten(0, 1), nrow=frames.shape[1], padding=2, pad_value=128)


def patch_table(patches: Tensor) -> Tensor:
    """Hard glimpses as the network sees them, (B, T, k, C, g, g) -> (3, H', W'): per image, a row
    per scale and a column per step, images stacked top to bottom."""
    b, t, k = patches.shape[:3]
    tiles = patches[:, :, :, :1].transpose(1, 2).reshape(b * k * t, 1, *patches.shape[-2:]).clamp(0, 1)
    tiles = F.interpolate(tiles, scale_factor=4, mode="nearest")
    return make_grid(tiles, nrow=t, padding=1, pad_value=0.5)


@torch.no_grad()
def rollout_for_pictures(net: AttentionNet, images: Tensor) -> Rollout:
    """The rollout pictures show: the policy's mean path for stochastic kinds (greedy), so the
    picture changes only when the policy does."""
    was_training = net.training
    net.eval()
    try:
        return net(images, greedy=True, keep_patches=True)
    finally:
        net.train(was_training)


def save_pictures(net: AttentionNet, images: Tensor, labels: Tensor, path: Path) -> list[Path]:
    """Write the (B, T) table to ``path`` (.png) and an animation over steps beside it (.gif)."""
    from PIL import Image

    frames = step_frames(net, images, rollout_for_pictures(net, images.to(next(net.parameters()).device)).to("cpu"), labels)
    path = Path(path)
    still = path.with_suffix(".png")
    Image.fromarray(table(frames).permute(1, 2, 0).numpy()).save(still)
    side = math.ceil(math.sqrt(len(frames)))
    movie = [Image.fromarray(make_grid(frames[:, t], nrow=side, padding=2, pad_value=128).permute(1, 2, 0).numpy())
             for t in range(frames.shape[1])]
    gif = path.with_suffix(".gif")
    movie[0].save(gif, save_all=True, append_images=movie[1:], duration=700, loop=0)
    return [still, gif]
