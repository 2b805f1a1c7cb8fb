"""Soft attention: every step blends the features of all grid locations with softmax weights."""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glimpse.checks import require, require_choice
from glimpse.models.base import AttentionNet, Rollout
from glimpse.models.blend import Blend


def location_grid(image_size: int, patch: int, stride: int) -> tuple[Tensor, int]:
    """Centres of the candidate patches, (n*n, 2) image-normalised (x, y), row-major, float64, and n.

    n = (image - patch) // stride + 1 positions per axis, centred on the image.
    """
    require(stride >= 1, "grid_stride", stride, "an integer >= 1 (a stride below 1 leaves no location)")
    n = (image_size - patch) // stride + 1
    require(n >= 2, "grid_stride", stride,
            f"at most image_size - patch = {image_size - patch}, so the grid has at least 2x2 locations "
            f"(this one would have {n}x{n})")
    margin = (image_size - patch - (n - 1) * stride) / 2
    centres = (margin + patch / 2 + stride * torch.arange(n, dtype=torch.float64)) * (2 / image_size) - 1  # (n,)
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([x, y], -1).view(-1, 2), n


class Scorer(nn.Module):
    """Scores of L locations from their features and the previous state: additive or dot-product."""

    kinds = ("additive", "dot")

    def __init__(self, features: int, hidden: int, size: int = 128, kind: str = "additive"):
        super().__init__()
        require_choice("score", kind, self.kinds)
        require(size >= 1, "attention_size", size, "an integer >= 1")
        self.kind, self.size = kind, size
        self.key = nn.Linear(features, size)
        self.query = nn.Linear(hidden, size)
        self.v = nn.Linear(size, 1) if kind == "additive" else None

    def forward(self, keys: Tensor, h: Tensor) -> Tensor:
        """keys (B, L, A) = self.key(f) computed once, h (B, hidden) -> scores (B, L).

        The additive score v . tanh(k + q) + b is computed as 2v . sigmoid(2(k + q)) + b - sum(v), the
        same function (tanh z = 2 sigmoid(2z) - 1): its (B, L, A) pass, the largest elementwise one of
        soft's step, runs several times faster as a sigmoid than as a tanh on CPUs (``definition``
        is the plain form, the reference the tests compare this with).
        """
        q = self.query(h)  # (B, A)
        if self.kind == "additive":
            s = torch.sigmoid(torch.add(2 * q[:, None], keys, alpha=2))  # sigmoid(2(k + q)), one pass
            return F.linear(s, 2 * self.v.weight, self.v.bias - self.v.weight.sum()).squeeze(-1)
        return (keys @ q[..., None]).squeeze(-1) / math.sqrt(self.size)

    def definition(self, keys: Tensor, h: Tensor) -> Tensor:
        """The additive score as written in the papers, v . tanh(k + q) + b (the dot score has one form)."""
        return self.v(torch.tanh(keys + self.query(h)[:, None])).squeeze(-1)

    def macs(self, locations: int, hidden: int) -> tuple[int, int]:
        """(once per image, once per step) multiply-adds."""
        per_step = hidden * self.size + locations * self.size
        return locations * self.key.in_features * self.size, per_step


class SoftAttention(AttentionNet):
    """Soft spatial attention on the hard model's own sensor, glimpse network, core and classifier.

    The features f_i of a grid of locations are computed once per image; step t blends them,
    c_t = sum_i a_t,i f_i with a_t = softmax(score(f_i, h_{t-1})), and feeds c_t to the core.
    Fully differentiable: trained by cross-entropy alone.
    """

    kind = "soft"
    stochastic = False
    detach_scores = False  # soft: the scores are trained by back-propagation through the blend

    def __init__(self, image_size: int, *, grid_stride: int = 4, score: str = "additive", attention_size: int = 128, **common):
        super().__init__(image_size, **common)
        grid, self.grid_size = location_grid(image_size, self.retina.patch, grid_stride)
        self.register_buffer("grid", grid.float(), persistent=False)  # (L, 2)
        self.grid_stride = grid_stride
        self.scorer = Scorer(self.glimpse.out_features, self.core.hidden, attention_size, score)
        # The convolution form needs each scale's grid stride to be a whole number of pooled cells.
        self.convolve = all(grid_stride % f == 0 for f in self.retina.factors)

    def features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images (B, C, H, W) -> f (B, L, D), the glimpse network at every grid location, and
        the scorer's keys of them (B, L, A) (of f detached where the scores must not train f)."""
        if self.convolve:
            return self.convolved_features(images)
        f = self.gathered_features(images)
        return f, self.scorer.key(f.detach() if self.detach_scores else f)

    def gathered_features(self, images: Tensor) -> Tensor:
        """The definition of f (B, L, D): the sensor's patches at each grid location, through the
        glimpse network, location by location."""
        loc = self.grid.expand(images.shape[0], -1, -1)  # (B, L, 2)
        return self.glimpse(self.retina(self.retina.pyramid(images), loc), loc)

    def convolved_features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """f and keys as ``features``, computed as convolutions: the same numbers as
        ``gathered_features`` (to float rounding), without gathering overlapping patches.

        The "what" layer read at every grid location is a strided convolution over each pyramid
        level (kernel: the layer's weights for that scale, g x g; stride: the grid stride in pooled
        cells), summed over scales. Where a scale's sample points fall between pooled cells (the
        sensor then reads bilinearly), the level is first interpolated at that fixed offset. The
        "where" half of the combining layer depends on the location only: computed once per grid,
        not once per image. The combining layer and the keys are 1x1 convolutions over the grid in
        channels-last layout: oneDNN's convolutions run these shapes faster than the matrix
        products of nn.Linear on CPUs.
        """
        g, n, stride, net = self.retina.patch, self.grid_size, self.grid_stride, self.glimpse
        size, k, c = self.retina.image_size, self.retina.scales, self.channels
        margin = (size - g - (n - 1) * stride) / 2
        weight = net.what.weight.view(-1, k, c, g, g) / net.pixel_std
        what = net.what.bias[:, None, None]
        for j, (f, level) in enumerate(zip(self.retina.factors, self.retina.pyramid(images))):
            first = (margin + g / 2) / f - g / 2  # pooled-cell index of the first sample point
            start, frac, step = math.floor(first), first - math.floor(first), stride // f
            end = start + step * (n - 1) + g - 1 + (frac > 0)  # the last cell read
            lo, hi = max(0, -start), max(0, end - (level.shape[-1] - 1))
            x = F.pad(level, (lo, hi, lo, hi))[..., start + lo:, start + lo:]  # zeros outside, as the sensor sees them
            if frac:  # bilinear at a fixed fraction: between neighbouring cells along both axes
                x = (1 - frac) * x[..., :-1, :] + frac * x[..., 1:, :]
                x = (1 - frac) * x[..., :-1] + frac * x[..., 1:]
            what = what + F.conv2d(x, weight[:, j], stride=step)[..., :n, :n]  # (B, what, n, n)
        what = torch.relu(what).contiguous(memory_format=torch.channels_last)
        split = net.what.out_features
        where = torch.relu(net.where(self.grid))  # (L, where): the same for every image
        by_place = F.linear(where, net.combine.weight[:, split:], net.combine.bias)  # (L, D)
        combined = F.conv2d(what, net.combine.weight[:, :split, None, None])  # (B, D, n, n)
        fmap = torch.relu(combined + by_place.t().reshape(-1, n, n))
        keys = F.conv2d(fmap.detach() if self.detach_scores else fmap, self.scorer.key.weight[..., None, None],
                        self.scorer.key.bias)
        b = images.shape[0]
        return (fmap.permute(0, 2, 3, 1).reshape(b, n * n, -1), keys.permute(0, 2, 3, 1).reshape(b, n * n, -1))

    def select(self, scores: Tensor, weights: Tensor, greedy: bool) -> tuple[Tensor, Tensor | None]:
        """What is done with the weights: soft attention blends all locations with them.

        Returns the mixing vector m_t (B, L), c_t = sum_i m_t,i f_i, and the log-probability of a
        sampled choice (None: nothing sampled). ``ChoiceAttention`` overrides only this.
        """
        return weights, None

    def forward(self, images: Tensor, greedy: bool = False, keep_patches: bool = False, samples: int = 1,
                scored: bool = True) -> Rollout:
        """images (B, C, H, W) -> Rollout with weights (samples * B, T, n, n), sample-major (as
        ``images.repeat(samples, 1, 1, 1)``); ``keep_patches`` is ignored; without ``scored``
        (prediction) choice's baselines, which only the loss reads, are not computed.

        The grid's features and keys do not depend on the path, so ``samples`` rollouts (choice's
        M-sample averaging) share one computation of them instead of one per repeat.
        """
        f, keys = self.features(images)  # (B, L, D), (B, L, A): once per image
        f, keys = f.repeat(samples, 1, 1), keys.repeat(samples, 1, 1)  # (M*B, ...); images give only dtype/device below
        b, blend = f.shape[0], Blend(f)
        state = self.core.init_state(b, images)
        h = images.new_zeros(b, self.core.hidden)
        weights, mixes, log_probs, baselines = [], [], [], []
        for _ in range(self.glimpses):
            scores = self.scorer(keys, h.detach() if self.detach_scores else h)  # (B, L)
            a = torch.softmax(scores, dim=-1)
            m, log_prob = self.select(scores, a, greedy)
            if log_prob is not None and scored:
                log_probs.append(log_prob)
                baselines.append(self.baseline(h))
            h, state = self.core(blend(m), state)  # c_t = sum_i m_t,i f_i
            weights.append(a)
            mixes.append(m)
        a = torch.stack(weights, 1)  # (B, T, L)
        n = self.grid_size
        return Rollout(
            logits=self.classifier(h),
            locations=torch.stack(mixes, 1).detach() @ self.grid,  # soft: expected; choice: chosen
            weights=a.view(b, self.glimpses, n, n),
            log_probs=torch.stack(log_probs, 1) if log_probs else None,
            baselines=torch.stack(baselines, 1) if baselines else None,
        )

    def cost(self) -> dict[str, int]:
        locations = len(self.grid)
        once, per_step = self.scorer.macs(locations, self.core.hidden)
        blend = locations * self.glimpse.out_features
        macs = locations * self.glimpse_macs() + once + self.glimpses * (per_step + blend + self.core_macs())
        return {"pixels": locations * self.pixels_per_glimpse, "macs": macs + self.classifier_macs()}
