"""One way to refuse bad settings: a message that names the argument, the value and what is allowed."""


class ConfigError(ValueError):
    """A setting is out of range; raised before any work starts."""


def require(ok: bool, name: str, value: object, allowed: str) -> None:
    """Raise ``ConfigError`` unless ``ok``; e.g. ``require(g >= 1, "patch", g, "an integer >= 1")``."""
    if not ok:
        raise ConfigError(f"{name}={value!r} is not allowed: expected {allowed}")


def require_choice(name: str, value: object, choices: tuple) -> None:
    require(value in choices, name, value, "one of " + ", ".join(repr(c) for c in choices))
