"""Secrets referenced by name: ``${secret:NAME}`` in a URL, header or option.

Metadata keeps the reference, never the value. A value is looked up when a connector runs,
first in the environment (``MODELWORKS_SECRET_<NAME>``), then in a file
``MODELWORKS_HOME/secrets/<NAME>`` readable only by its owner (``modelworks secrets set``
writes one). Every value resolved in this process is remembered so that :func:`redact` can
scrub it from error messages and logs.
"""

from __future__ import annotations

import os
import re
import stat
import threading
from pathlib import Path

from modelworks.core.config import Settings, get_settings
from modelworks.core.errors import InvalidInput, NotFound

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,99}$")
REFERENCE = re.compile(r"\$\{secret:([A-Za-z][A-Za-z0-9_]{0,99})\}")
ENV_PREFIX = "MODELWORKS_SECRET_"
MASK = "***"

_resolved: set[str] = set()
_lock = threading.Lock()


# MODELWORKS_SECRET_KEY is the server's cookie-signing key (a setting), not a user secret.
RESERVED = frozenset({"key"})


def check_name(name: str) -> str:
    if isinstance(name, str) and name.lower() in RESERVED:
        raise InvalidInput(
            f"Secret name {name!r} is reserved (MODELWORKS_SECRET_KEY signs server sessions); "
            "pick another name."
        )
    if not NAME.match(name):
        raise InvalidInput(
            f"Secret name {name!r} is not valid: use letters, digits and '_', "
            "starting with a letter (at most 100 characters)."
        )
    return name


def _folder(settings: Settings) -> Path:
    return settings.home_path / "secrets"


def resolve(name: str, settings: Settings | None = None) -> str:
    """The value of secret ``name``; ``NotFound`` says where it was looked for."""
    check_name(name)
    settings = settings or get_settings()
    value = os.environ.get(ENV_PREFIX + name.upper()) or os.environ.get(ENV_PREFIX + name)
    if value is None:
        path = _folder(settings) / name
        if path.is_file():
            value = path.read_text(encoding="utf-8").rstrip("\r\n")
    if value is None:
        raise NotFound(
            f"Secret {name!r} is not set. Set it with `modelworks secrets set {name}` or the "
            f"environment variable {ENV_PREFIX}{name.upper()}."
        )
    if value:
        with _lock:
            _resolved.add(value)
    return value


def expand(text: str, settings: Settings | None = None) -> str:
    """Replace every ``${secret:NAME}`` in ``text`` with the secret's value."""
    return REFERENCE.sub(lambda m: resolve(m.group(1), settings), text)


def references(text: str) -> list[str]:
    """The secret names ``text`` refers to."""
    return REFERENCE.findall(text)


def redact(text: str) -> str:
    """``text`` with every secret value resolved in this process replaced by ``***``."""
    with _lock:
        values = sorted(_resolved, key=len, reverse=True)
    for value in values:
        if len(value) >= 3:
            text = text.replace(value, MASK)
    return text


def store(name: str, value: str, settings: Settings | None = None) -> Path:
    """Write a secret to ``HOME/secrets/NAME`` (mode 0600, written atomically)."""
    check_name(name)
    settings = settings or get_settings()
    folder = _folder(settings)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, stat.S_IRWXU)
    path = folder / name
    tmp = folder / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(value)
    os.replace(tmp, path)
    return path


def delete(name: str, settings: Settings | None = None) -> bool:
    check_name(name)
    path = _folder(settings or get_settings()) / name
    if path.is_file():
        path.unlink()
        return True
    return False


def names(settings: Settings | None = None) -> list[str]:
    """Names of the secrets stored in files (environment secrets are not listed)."""
    folder = _folder(settings or get_settings())
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and NAME.match(p.name))
