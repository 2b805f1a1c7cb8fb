"""The training objective: cross-entropy, plus REINFORCE and a baseline where attention is hard."""

import torch
import torch.nn.functional as F
from torch import Tensor

from glimpse.models import Rollout


def reinforce(log_probs: Tensor, baselines: Tensor, reward: Tensor) -> dict[str, Tensor]:
    """Score-function loss for the sampled locations, and the baseline's squared error.

    log_probs, baselines (B, S) for S sampled steps; reward (B,). The advantage R - b_t uses the
    baseline detached, so the policy term reaches the policy only; the baseline is fitted to R.
    """
    advantage = reward[:, None] - baselines.detach()  # (B, S)
    return {
        "reinforce": -(log_probs * advantage).sum(1).mean(),
        "baseline_mse": F.mse_loss(baselines, reward[:, None].expand_as(baselines)),
        "advantage": advantage.mean(),
        "baseline": baselines.mean(),
        "reward": reward.mean(),
    }


def objective(out: Rollout, labels: Tensor, reinforce_weight: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """The hybrid loss of Mnih et al.: CE + weight * REINFORCE + baseline MSE; CE alone for soft.

    Returns the loss and its parts (detached) for logging. Reward is 1 for a correct final class.
    """
    ce = F.cross_entropy(out.logits, labels)
    parts = {"ce": ce}
    loss = ce
    if out.log_probs is not None and out.log_probs.shape[1] > 0:  # one glimpse samples nothing
        reward = (out.logits.detach().argmax(-1) == labels).float()
        parts |= reinforce(out.log_probs, out.baselines, reward)
        loss = ce + reinforce_weight * parts["reinforce"] + parts["baseline_mse"]
    if out.weights is not None:
        a = out.weights.flatten(2)  # (B, T, L)
        parts["attention_entropy"] = -(a * torch.log(a.clamp_min(1e-12))).sum(-1).mean()
    parts["loss"] = loss
    return loss, {k: v.detach() for k, v in parts.items()}
