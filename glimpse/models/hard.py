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

    def first_location(self, rollouts: int, like: Tensor) -> Tensor:
        loc = like.new_zeros(rollouts, 2)
        return loc if self.start == "centre" else loc.uniform_(-1, 1)

    def forward(self, images: Tensor, greedy: bool = False, keep_patches: bool = False, samples: int = 1,
                scored: bool = True) -> Rollout:
        """images (B, C, H, W) -> Rollout of ``samples`` * B rollouts, sample-major (as
        ``images.repeat(samples, 1, 1, 1)``); ``greedy`` looks at the policy mean instead of sampling.
        Without ``scored`` (prediction) the same paths are drawn but their log-probabilities, means
        and baselines, which only the loss reads, are not computed (their fields are left empty).

        Every look depends on the path, but the image's pyramid does not: the M paths of an image read
        one pyramid, each glimpse as one of M locations in it, instead of a pyramid of M copies of the
        image (on cluttered 60x60, building it was a sixth of M = 10 evaluation, copying the images
        and their padding a quarter)."""
        b, n = images.shape[0], images.shape[0] * samples
        levels = self.retina.pyramid(images)
        loc = self.first_location(n, images)
        state = self.core.init_state(n, images)
        locations, log_probs, baselines, means, patches = [], [], [], [], []
        for t in range(self.glimpses):
            seen = self.retina(levels, loc.view(samples, b, 2).transpose(0, 1))  # (B, M, k, C, g, g)
            seen = seen.transpose(0, 1).reshape(n, *seen.shape[2:])  # (M*B, k, C, g, g), sample-major
            h, state = self.core(self.glimpse(seen, loc), state)
            locations.append(loc)
            if keep_patches:
                patches.append(seen)
            if t + 1 == self.glimpses:  # the last state only classifies
                break
            if not scored:  # prediction: where to look next, nothing the loss reads
                loc = self.policy.look(h, greedy)
                continue
            loc, log_prob, mean = self.policy(h, greedy)
            log_probs.append(log_prob)
            means.append(mean)
            baselines.append(self.baseline(h))
        return Rollout(
            logits=self.classifier(h),
            locations=torch.stack(locations, 1),
            log_probs=_stack(log_probs, images.new_zeros(n, 0)) if scored else None,
            baselines=_stack(baselines, images.new_zeros(n, 0)) if scored else None,
            means=_stack(means, images.new_zeros(n, 0, 2)) if scored else None,
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
