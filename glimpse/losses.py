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


REWARDS = ("correct", "probability", "log_probability")
BASELINES = ("learned", "batch_mean", "leave_one_out")


def final_reward(logits: Tensor, labels: Tensor, kind: str = "correct") -> Tensor:
    """The reward of each rollout (B,) from its final logits, detached.

    "correct": 1 for a correct class, else 0 (the paper). "probability": the probability given to
    the true class, so a look that makes a right answer surer still earns more. "log_probability":
    its logarithm (Ba et al. 2015: REINFORCE on a lower bound of log p(y | x)); unbounded below.
    """
    logits = logits.detach()
    if kind == "correct":
        return (logits.argmax(-1) == labels).float()
    log_p = logits.log_softmax(-1).gather(-1, labels[:, None]).squeeze(-1)
    return log_p.exp() if kind == "probability" else log_p


def _others_mean(groups: Tensor, steps: int) -> Tensor:
    """groups (n, k): for each entry, the mean of the other n - 1 entries in its column; flattened
    row-major and repeated for each of ``steps`` sampled steps, (n * k, steps)."""
    n = groups.shape[0]
    others = (groups.sum(0, keepdim=True) - groups) / max(1, n - 1)
    return others.reshape(-1, 1).expand(-1, steps)


def batch_mean(reward: Tensor, steps: int) -> Tensor:
    """The mean reward of the *other* rollouts in the batch, (B, steps): a baseline with no
    parameters that leaves the estimator unbiased (each rollout's own reward is left out)."""
    return _others_mean(reward[:, None], steps)


def leave_one_out(reward: Tensor, steps: int, samples: int) -> Tensor:
    """The mean reward of the *other* paths on the same image, (M * B, steps), for sample-major
    rollouts (M paths of each of B images): the baseline knows how hard this very image is, which
    neither a learned b_t nor the batch mean can (Kool et al. 2019, "Buy 4 REINFORCE samples, get a
    baseline for free"). With one path per image there are no other paths: the batch mean serves."""
    return batch_mean(reward, steps) if samples < 2 else _others_mean(reward.view(samples, -1), steps)


def objective(out: Rollout, labels: Tensor, reinforce_weight: float = 1.0, reward: str = "correct",
              baseline: str = "learned", samples: int = 1) -> tuple[Tensor, dict[str, Tensor]]:
    """The hybrid loss of Mnih et al.: CE + weight * REINFORCE + baseline MSE; CE alone for soft.

    Returns the loss and its parts (detached) for logging. ``reward``: one of REWARDS.
    ``baseline``: "learned" (b_t from h_t, the paper), "batch_mean" (see ``batch_mean``) or
    "leave_one_out" (see ``leave_one_out``; ``samples``: the M paths per image in ``out``); with
    either of the last two the learned b_t is not trained, and baseline_mse logs their error instead.
    """
    ce = F.cross_entropy(out.logits, labels)
    parts = {"ce": ce}
    loss = ce
    if out.log_probs is not None and out.log_probs.shape[1] > 0:  # one glimpse samples nothing
        r = final_reward(out.logits, labels, reward)
        learned, steps = baseline == "learned", out.log_probs.shape[1]
        if learned:
            b = out.baselines
        elif baseline == "batch_mean":
            b = batch_mean(r, steps)
        else:
            b = leave_one_out(r, steps, samples)
        parts |= reinforce(out.log_probs, b, r)
        loss = ce + reinforce_weight * parts["reinforce"] + (parts["baseline_mse"] if learned else 0)
    if out.weights is not None:
        a = out.weights.flatten(2)  # (B, T, L)
        parts["attention_entropy"] = -(a * torch.log(a.clamp_min(1e-12))).sum(-1).mean()
    parts["loss"] = loss
    return loss, {k: v.detach() for k, v in parts.items()}
