"""Pure nn.Modules: usable without Lightning."""

import inspect

from glimpse.checks import require_choice
from glimpse.models.base import AttentionNet, Rollout, average_paths
from glimpse.models.choice import ChoiceAttention
from glimpse.models.hard import RecurrentAttention
from glimpse.models.retina import Retina
from glimpse.models.soft import SoftAttention

KINDS: dict[str, type[AttentionNet]] = {"hard": RecurrentAttention, "soft": SoftAttention, "choice": ChoiceAttention}


def build(attention: str, image_size: int, **kwargs) -> AttentionNet:
    """The model of the named kind; kwargs are its constructor arguments."""
    require_choice("attention", attention, tuple(KINDS))
    return KINDS[attention](image_size, **kwargs)


def defaults(classes: tuple[type[AttentionNet], ...] = (AttentionNet, *KINDS.values())) -> dict[str, object]:
    """Every kind's constructor arguments with their defaults, by name. The constructors are the one place
    a default is written; ``GlimpseModel``'s signature (what the CLI shows and checks) reads them here.
    A setting two kinds default differently is refused (``ValueError``): one setting, one default, or a
    kind would silently train with the other's."""
    out: dict[str, object] = {}
    for cls in classes:
        for name, param in inspect.signature(cls.__init__).parameters.items():
            if param.default is param.empty:
                continue
            if out.setdefault(name, param.default) != param.default:
                raise ValueError(f"{cls.__name__}: {name}={param.default!r}, but another kind defaults it to {out[name]!r}")
    return out


__all__ = ["AttentionNet", "ChoiceAttention", "KINDS", "RecurrentAttention", "Retina", "Rollout", "SoftAttention", "average_paths", "build", "defaults"]
