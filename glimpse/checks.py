"""One way to refuse bad settings: a message that names the argument, the value and what is allowed."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


class ConfigError(ValueError):
    """A setting is out of range; raised before any work starts."""


def require(ok: bool, name: str, value: object, allowed: str) -> None:
    """Raise ``ConfigError`` unless ``ok``; e.g. ``require(g >= 1, "patch", g, "an integer >= 1")``."""
    if not ok:
        raise ConfigError(f"{name}={value!r} is not allowed: expected {allowed}")


def require_choice(name: str, value: object, choices: tuple) -> None:
    require(value in choices, name, value, "one of " + ", ".join(repr(c) for c in choices))


def unwritable_folder(folder: str | Path) -> str | None:
    """Why files cannot be created in ``folder`` (or in the folders that would be made for it), or None.

    Nothing is left behind: the nearest folder that exists must be a folder where a file can be made
    (one is made and removed at once). Why before the
    work: a run that cannot save learns that after its first epoch, a benchmark after all its steps.
    """
    folder = Path(folder).absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    try:  # permissions say yes; a read-only or special file system (or root's blanket yes) may still say no
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".glimpse-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"{existing} is not writable: {exc.strerror or exc}"
    return None


def require_writable_folder(name: str, folder: str | Path) -> None:
    """Refuse a folder that files cannot be written into, naming the setting and the reason."""
    reason = unwritable_folder(folder)
    require(reason is None, name, str(folder), f"a folder that can be created and written ({reason})")


def require_writable_file(name: str, path: str | Path) -> None:
    """Refuse an output file path that cannot be written: a folder, or in a folder that cannot be written."""
    path = Path(path)
    require(not path.is_dir(), name, str(path), "a file path (this is a folder)")
    reason = unwritable_folder(path.parent)
    require(reason is None, name, str(path), f"a file in a folder that can be created and written ({reason})")


def require_new_output(name: str, path: str | Path, ours: Callable[[Path], bool]) -> None:
    """Refuse an output file that cannot be written, or that exists and is not an earlier output of
    this command (``ours`` tells): a typo must not overwrite a checkpoint or anyone's data."""
    path = Path(path)
    require_writable_file(name, path)
    require(not path.exists() or ours(path), name, str(path),
            "a new file, or an earlier output of this command (this file exists and is not one; choose another path)")
