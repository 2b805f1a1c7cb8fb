"""What every attention model has: the sensor, the glimpse network, the core and the classifier."""

from dataclasses import dataclass

from lightning_utilities import apply_to_collection
from torch import Tensor, nn

from glimpse.checks import require
from glimpse.models.parts import Core, GlimpseNetwork
from glimpse.models.retina import Retina


@dataclass
class Rollout:
    """What one pass over a batch produced; fields a kind does not have stay None."""

    logits: Tensor  # (B, classes), from the last state
    locations: Tensor  # (B, T, 2) where each glimpse looked (soft: the expected location)
    log_probs: Tensor | None = None  # (B, T-1) hard: log pi(l_t) of each sampled location
    baselines: Tensor | None = None  # (B, T-1) hard: b_t for each sampled location
    means: Tensor | None = None  # (B, T-1, 2) hard: the policy mean behind each sample
    weights: Tensor | None = None  # (B, T, grid_h, grid_w) soft: attention weights per step
    patches: Tensor | None = None  # (B, T, k, C, g, g) hard, when asked for: what the network saw

    def to(self, device) -> "Rollout":
        """A copy with every tensor on ``device``. (Not lightning's move_data_to_device: it would
        call this very method, since a Rollout has a ``to``.)"""
        return apply_to_collection(self, Tensor, Tensor.to, device)


def average_paths(logits: Tensor, samples: int) -> Tensor:
    """logits (samples * B, classes) of sample-major rollouts -> class probabilities (B, classes)
    averaged over each image's ``samples`` paths: the one averaging rule of M paths (training
    metrics, evaluation, the search statistics of ``glimpse.evaluate``)."""
    return logits.softmax(-1).view(samples, -1, logits.shape[-1]).mean(0)


class AttentionNet(nn.Module):
    """The shared parts; subclasses decide where each step looks.

    Args are the paper's names: T glimpses of k scales of g x g patches, widened by s per scale.
    """

    kind: str = ""
    stochastic: bool = False

    def __init__(
        self,
        image_size: int,
        channels: int = 1,
        classes: int = 10,
        glimpses: int = 6,
        patch: int = 8,
        scales: int = 1,
        scale_factor: int = 2,
        what: int = 128,
        where: int = 128,
        glimpse_features: int = 256,
        hidden: int = 256,
        core: str = "rnn",
    ):
        super().__init__()
        require(glimpses >= 1, "glimpses", glimpses, "an integer >= 1")
        require(channels >= 1, "channels", channels, "an integer >= 1")
        require(classes >= 2, "classes", classes, "an integer >= 2")
        for name, value in (("what", what), ("where", where), ("glimpse_features", glimpse_features), ("hidden", hidden)):
            require(value >= 1, name, value, "an integer >= 1")
        self.channels = channels
        self.retina = Retina(image_size, patch, scales, scale_factor)
        widest = patch * scale_factor ** (scales - 1)
        require(widest <= image_size, "scales", scales,
                f"a number of scales whose widest patch (patch * scale_factor^(scales-1) = {widest}) fits the {image_size}x{image_size} image")
        self.glimpses = glimpses
        self.glimpse = GlimpseNetwork(self.pixels_per_glimpse, what, where, glimpse_features)
        self.core = Core(glimpse_features, hidden, core)
        self.classifier = nn.Linear(hidden, classes)

    def glimpse_macs(self) -> int:
        """Multiply-adds of the glimpse network for one location (analytic: its Linear layers)."""
        return sum(m.in_features * m.out_features for m in self.glimpse.modules() if isinstance(m, nn.Linear))

    def core_macs(self) -> int:
        gates = 1 if self.core.kind == "rnn" else 4
        return gates * (self.glimpse.out_features + self.core.hidden) * self.core.hidden

    def classifier_macs(self) -> int:
        return self.classifier.in_features * self.classifier.out_features

    @property
    def pixels_per_glimpse(self) -> int:
        """Input numbers one glimpse delivers to the network: C * k * g^2."""
        return self.channels * self.retina.pixels_per_glimpse

    def cost(self) -> dict[str, int]:
        """Per image: input pixels the sensor delivers to the network, and multiply-adds (analytic,
        Linear layers only; sampling and elementwise work are not counted)."""
        raise NotImplementedError
