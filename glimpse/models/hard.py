"""Hard attention: the Recurrent Attention Model (Mnih et al. 2014)."""

import torch
from torch import Tensor

from glimpse.checks import require_choice
from glimpse.models.base import AttentionNet, Rollout
from glimpse.models.parts import Baseline, GaussianPolicy


class RecurrentAttention(AttentionNet):
    """RAM: each step reads one multi-resolution glimpse at a location sampled from a Gaussian policy.

    Extra args: ``std`` of the policy; ``policy_norm``, the policy reads the layer-normalised state,
    and ``policy_hidden``, units of a hidden layer in its mean (see GaussianPolicy); ``start``, the first location: "centre" (default: the digit is
    most often there on 28x28, and on a 60x60 canvas the widest 48x48 scale of a centred glimpse sees
    most of it, so the first look is informative and costs no variance) or "random" (uniform).
    """

    kind = "hard"
    stochastic = True
    starts = ("centre", "random")

    def __init__(self, image_size: int, *, std: float = 0.1, start: str = "centre", policy_norm: bool = False,
                 policy_hidden: int = 0, **common):
        super().__init__(image_size, **common)
        require_choice("start", start, self.starts)
        self.start = start
        self.policy = GaussianPolicy(self.core.hidden, std, normalize=policy_norm, layer=policy_hidden)
        self.baseline = Baseline(self.core.hidden)

    def first_location(self, images: Tensor) -> Tensor:
        loc = images.new_zeros(images.shape[0], 2)
        return loc if self.start == "centre" else loc.uniform_(-1, 1)

    def forward(self, images: Tensor, greedy: bool = False, keep_patches: bool = False, samples: int = 1) -> Rollout:
        """images (B, C, H, W) -> Rollout of ``samples`` * B rollouts, sample-major (as
        ``images.repeat(samples, 1, 1, 1)``); ``greedy`` looks at the policy mean instead of sampling."""
        images = images.repeat(samples, 1, 1, 1)  # every look depends on the path: nothing to share
        levels = self.retina.pyramid(images)
        loc = self.first_location(images)
        state = self.core.init_state(images.shape[0], images)
        locations, log_probs, baselines, means, patches = [], [], [], [], []
        for t in range(self.glimpses):
            seen = self.retina(levels, loc[:, None])[:, 0]  # (B, k, C, g, g)
            h, state = self.core(self.glimpse(seen, loc), state)
            locations.append(loc)
            if keep_patches:
                patches.append(seen)
            if t + 1 < self.glimpses:  # the last state only classifies
                loc, log_prob, mean = self.policy(h, greedy)
                log_probs.append(log_prob)
                means.append(mean)
                baselines.append(self.baseline(h))
        b = images.shape[0]
        return Rollout(
            logits=self.classifier(h),
            locations=torch.stack(locations, 1),
            log_probs=_stack(log_probs, images.new_zeros(b, 0)),
            baselines=_stack(baselines, images.new_zeros(b, 0)),
            means=_stack(means, images.new_zeros(b, 0, 2)),
            patches=torch.stack(patches, 1) if keep_patches else None,
        )

    def cost(self) -> dict[str, int]:
        t, hidden = self.glimpses, self.core.hidden
        policy_and_baseline = self.policy.macs() + hidden
        macs = t * (self.glimpse_macs() + self.core_macs()) + (t - 1) * policy_and_baseline + self.classifier_macs()
        return {"pixels": t * self.pixels_per_glimpse, "macs": macs}

def _stack(steps: list[Tensor], empty: Tensor) -> Tensor:
    """Per-step tensors -> (B, steps, ...); with one glimpse there are no sampled steps."""
    return torch.stack(steps, 1) if steps else empty
