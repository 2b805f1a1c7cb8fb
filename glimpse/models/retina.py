"""The glimpse sensor: k concentric square patches around a location, each resized to g x g."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glimpse.checks import require


class Retina(nn.Module):
    """Reads patches of side g, g*s, g*s^2, ... centred on l, each averaged down to g x g.

    Locations are image-normalised (x, y) in [-1, 1]: (-1, -1) is the top-left corner of the
    image, (0, 0) its centre, (1, 1) the bottom-right corner. Pixels outside the image read 0.

    Resizing is an area average: scale i samples an image average-pooled by s^i (the pyramid is
    built once per image, not once per glimpse), so a patch whose corner falls on a multiple of
    s^i pixels reads exact block means and the finest scale at an integer corner reads exact
    pixels; elsewhere the value is bilinear between neighbouring pooled cells.
    """

    def __init__(self, image_size: int, patch: int, scales: int = 1, scale_factor: int = 2):
        super().__init__()
        require(patch >= 1, "patch", patch, "an integer >= 1")
        require(scales >= 1, "scales", scales, "an integer >= 1")
        require(scale_factor >= 1, "scale_factor", scale_factor, "an integer >= 1")
        require(patch <= image_size, "patch", patch, f"at most the image size {image_size}")
        self.image_size, self.patch, self.scales, self.scale_factor = image_size, patch, scales, scale_factor
        self.factors = [scale_factor**i for i in range(scales)]
        # Offsets of the g sample points inside a patch, in units of pooled cells: (g,)
        self.register_buffer("cells", torch.arange(patch, dtype=torch.float32) + 0.5 - patch / 2, persistent=False)

    @property
    def pixels_per_glimpse(self) -> int:
        """Numbers the network receives from one glimpse (per channel): k * g^2."""
        return self.scales * self.patch**2

    def pyramid(self, images: Tensor) -> list[Tensor]:
        """images (B, C, H, W) -> one image per scale, average-pooled by s^i, zero-padded to fit."""
        levels = []
        for f in self.factors:
            if f == 1:
                levels.append(images)
                continue
            h, w = images.shape[-2:]
            padded = F.pad(images, (0, -w % f, 0, -h % f))  # zeros outside, as the sensor sees them
            levels.append(F.avg_pool2d(padded, f))
        return levels

    def forward(self, levels: list[Tensor], loc: Tensor) -> Tensor:
        """levels from ``pyramid``, loc (B, N, 2) -> patches (B, N, k, C, g, g)."""
        b, n, _ = loc.shape
        g, h, w = self.patch, self.image_size, self.image_size
        patches = []
        for f, level in zip(self.factors, levels):
            hp, wp = level.shape[-2:]
            # Patch centre in pooled cells, then the g sample points around it.
            cx = (loc[..., 0] + 1) * (w / (2 * f))  # (B, N)
            cy = (loc[..., 1] + 1) * (h / (2 * f))
            gx = (cx[..., None] + self.cells) * (2 / wp) - 1  # (B, N, g)
            gy = (cy[..., None] + self.cells) * (2 / hp) - 1
            grid = torch.stack(torch.broadcast_tensors(gx[..., None, :], gy[..., :, None]), dim=-1)  # (B, N, g, g, 2)
            out = F.grid_sample(level, grid.view(b, n * g, g, 2), mode="bilinear", padding_mode="zeros", align_corners=False)
            patches.append(out.view(b, -1, n, g, g).transpose(1, 2))  # (B, N, C, g, g)
        return torch.stack(patches, dim=2)  # (B, N, k, C, g, g)
