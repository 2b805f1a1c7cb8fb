"""The pieces both attention kinds share, and the two only the hard model has."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Normal

from glimpse.checks import require, require_choice


class GlimpseNetwork(nn.Module):
    """"What" (the patches) and "where" (the location) encoded apart, then combined into g_t.

    Paper sizes: 128 + 128 -> 256. The two output projections of the paper are one Linear over
    the concatenation (the same function, one matrix product instead of two). Pixels are divided
    by MNIST's pixel standard deviation, so the first layer starts on unit-scale inputs (both
    kinds learn markedly faster); zero stays zero, so blank canvas and outside-the-image agree.
    """

    pixel_std = 0.3081  # of MNIST training pixels in [0, 1]

    def __init__(self, patch_numbers: int, what: int = 128, where: int = 128, out: int = 256):
        super().__init__()
        self.what = nn.Linear(patch_numbers, what)
        self.where = nn.Linear(2, where)
        self.combine = nn.Linear(what + where, out)
        self.out_features = out

    def forward(self, patches: Tensor, loc: Tensor) -> Tensor:
        """patches (..., k, C, g, g), loc (..., 2) -> g (..., out)."""
        what = torch.relu(self.what(patches.flatten(-4) / self.pixel_std))
        where = torch.relu(self.where(loc))
        return torch.relu(self.combine(torch.cat([what, where], dim=-1)))


class Core(nn.Module):
    """Recurrent state h_t: the paper's rectified RNN, or an LSTM."""

    kinds = ("rnn", "lstm")

    def __init__(self, inputs: int, hidden: int = 256, kind: str = "rnn"):
        super().__init__()
        require_choice("core", kind, self.kinds)
        self.kind, self.hidden = kind, hidden
        self.cell = nn.RNNCell(inputs, hidden, nonlinearity="relu") if kind == "rnn" else nn.LSTMCell(inputs, hidden)

    def init_state(self, batch: int, like: Tensor):
        h = like.new_zeros(batch, self.hidden)
        return h if self.kind == "rnn" else (h, h)

    def forward(self, g: Tensor, state) -> tuple[Tensor, object]:
        """g (B, in), state -> h (B, hidden), next state."""
        state = self.cell(g, state)
        return (state, state) if self.kind == "rnn" else (state[0], state)


class GaussianPolicy(nn.Module):
    """Where to look next: l ~ N(tanh(W h), std^2 I), std fixed.

    With ``normalize``, W reads the layer-normalised state and starts at zero (every image gets
    the same first looks, near the centre): a rectified RNN's state grows from step to step (its
    norm rose 3.5 -> 29 over 6 steps in a trained model), which saturates tanh(W h) and drives late
    glimpses to the image border whatever direction W has learned; normalised, only the direction
    of h moves the glimpse.
    The state is detached so that only REINFORCE trains this network; the sample is detached
    because it is fed back into the glimpse sensor as an input, not as a differentiable path.
    The log-probability is of the sample before clamping to [-1, 1].

    With ``layer`` > 0 the mean is tanh(W relu(V h)), V of ``layer`` units: the location network of
    the public PyTorch fork that reached 0.8-1.2 % on 28x28 with one path (docs/results.md). W keeps
    its name (``mean``), so checkpoints of the one-layer policy still load.
    """

    def __init__(self, hidden: int, std: float, normalize: bool = False, layer: int = 0):
        super().__init__()
        require(std > 0, "std", std, "a number > 0")
        require(layer >= 0, "policy_hidden", layer, "an integer >= 0 (0: the paper's linear mean)")
        # The std is a tensor, what the forward pass reads (a compiled rollout takes an annealed std
        # as an input instead of recompiling for each value), and a buffer: saved with the weights,
        # so a checkpoint holds the std it was last sampled with and evaluation samples with it.
        self.register_buffer("scale", torch.tensor(float(std)))
        self.normalize = normalize
        self.hidden = nn.Sequential(nn.Linear(hidden, layer), nn.ReLU()) if layer else nn.Identity()
        self.mean = nn.Linear(layer or hidden, 2)
        if normalize:  # unit-variance inputs would otherwise scatter the first looks over the image
            nn.init.zeros_(self.mean.weight)

    def macs(self) -> int:
        """Multiply-adds of one step's mean."""
        return sum(m.in_features * m.out_features for m in self.modules() if isinstance(m, nn.Linear))

    @property
    def std(self) -> float:
        return float(f"{float(self.scale):.7g}")  # the digits float32 holds: 0.1, not 0.10000000149

    @std.setter
    def std(self, value: float) -> None:
        self.scale.fill_(value)

    def forward(self, h: Tensor, greedy: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """h (B, hidden) -> location (B, 2) detached, log-probability (B,), mean (B, 2)."""
        mean, sample = self._draw(h, greedy)
        # validate_args=False: checking the arguments costs host-device syncs on every step, and a
        # diverged (non-finite) mean must reach the loss, where the training guard names the step
        log_prob = Normal(mean, self.scale, validate_args=False).log_prob(sample).sum(-1)
        return sample.clamp(-1, 1), log_prob, mean

    def look(self, h: Tensor, greedy: bool = False) -> Tensor:
        """h (B, hidden) -> only the location (B, 2), the same draw as ``forward``'s: what prediction
        needs, without the log-probability the loss needs."""
        return self._draw(h, greedy)[1].clamp(-1, 1)

    def _draw(self, h: Tensor, greedy: bool) -> tuple[Tensor, Tensor]:
        """The mean and the sample before clamping (detached)."""
        h = h.detach()
        if self.normalize:
            h = F.layer_norm(h, h.shape[-1:])
        mean = torch.tanh(self.mean(self.hidden(h)))
        return mean, mean.detach() if greedy else torch.normal(mean.detach(), self.scale.expand_as(mean))


class Baseline(nn.Module):
    """b_t from h_t (detached): the expected reward, trained by squared error to it."""

    def __init__(self, hidden: int):
        super().__init__()
        self.value = nn.Linear(hidden, 1)

    def forward(self, h: Tensor) -> Tensor:
        return self.value(h.detach()).squeeze(-1)  # (B,)
