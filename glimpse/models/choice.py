"""Categorical hard attention: the soft model's grid, features and scores, but one location chosen."""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from glimpse.checks import require, require_choice
from glimpse.models.parts import Baseline
from glimpse.models.soft import SoftAttention


class ChoiceAttention(SoftAttention):
    """Samples one index i_t ~ Categorical(a_t) and takes c_t = f_{i_t}; everything else is soft's.

    Two estimators train the choice:
      - "reinforce": the score-function estimator with the hard model's reward and learned
        baseline. As RAM's location network, the scorer sees detached features and state, so it
        is trained by the REINFORCE term only, and the classification loss trains the rest.
      - "gumbel": straight-through Gumbel-softmax: the forward pass takes the one-hot choice, the
        backward pass the gradient of softmax((scores + Gumbel noise) / temperature), so the
        classification loss trains the scorer directly. The temperature can anneal over training.

    Evaluation samples as in training (averaged over M rollouts) or, greedy, takes the argmax.

    Extra args: ``estimator``; ``temperature`` (gumbel: tau at step 0), ``temperature_min`` and
    ``anneal`` (tau_s = max(min, tau_0 * exp(-anneal * s / 1000)) at training step s).
    """

    kind = "choice"
    stochastic = True
    estimators = ("reinforce", "gumbel")

    def __init__(self, image_size: int, *, estimator: str = "reinforce", temperature: float = 1.0,
                 temperature_min: float = 0.5, anneal: float = 0.0, **soft):
        super().__init__(image_size, **soft)
        require_choice("estimator", estimator, self.estimators)
        require(temperature > 0, "temperature", temperature, "a number > 0")
        require(0 < temperature_min <= temperature, "temperature_min", temperature_min,
                f"a number in (0, temperature={temperature}]")
        require(anneal >= 0, "anneal", anneal, "a number >= 0 (0: constant temperature)")
        self.estimator, self.initial_temperature = estimator, temperature
        self.temperature_min, self.anneal = temperature_min, anneal
        # As the hard policy's std: a tensor for the forward pass, so annealing does not recompile.
        self.register_buffer("tau", torch.tensor(float(temperature)), persistent=False)
        self.temperature = temperature
        self.detach_scores = estimator == "reinforce"
        self.baseline = Baseline(self.core.hidden) if estimator == "reinforce" else None

    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self._temperature = float(value)
        self.tau.fill_(value)

    def set_step(self, step: int) -> None:
        """Anneal the Gumbel temperature to training step ``step``."""
        self.temperature = max(self.temperature_min, self.initial_temperature * math.exp(-self.anneal * step / 1000))

    def select(self, scores: Tensor, weights: Tensor, greedy: bool) -> tuple[Tensor, Tensor | None]:
        """The one place choice differs from soft: a one-hot m_t (B, L) instead of the weights."""
        if greedy:
            return F.one_hot(weights.argmax(-1), weights.shape[-1]).to(weights.dtype), None
        if self.estimator == "gumbel":
            return F.gumbel_softmax(scores, tau=self.tau, hard=True), None
        index = sample_index(weights.detach())  # (B,)
        log_prob = torch.log_softmax(scores, -1).gather(-1, index[:, None]).squeeze(-1)
        return F.one_hot(index, weights.shape[-1]).to(weights.dtype), log_prob


def sample_index(weights: Tensor) -> Tensor:
    """One index per row drawn from the row's weights (B, L): the draw torch.multinomial makes for
    one sample (the exponential race, argmax of w / E with E ~ Exp(1)), draw for draw.

    Why not torch.multinomial itself: it first checks the weights by reading them on the host (a
    wait on a GPU, every step) and raises inside the forward pass on a diverged model's weights,
    before the training loss's guard can name the step; this draw never fails and compiles.
    """
    return (weights / torch.empty_like(weights).exponential_()).argmax(-1)
