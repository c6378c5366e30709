"""The ``modelworks`` command line: a thin adapter over the services.

Every command opens the embedded store from settings, calls one service method as the
local principal (the OS user, a superuser on the local store) and prints the result.
"""

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from modelworks.core.auth import Principal, local_principal

if TYPE_CHECKING:
    from modelworks.core.store import Store

__all__ = ["local_principal", "open_store", "principal"]


@contextlib.contextmanager
def open_store(*, migrate: bool = True) -> Iterator["Store"]:
    """The store from settings (``MODELWORKS_HOME`` etc.), closed when the command ends."""
    from modelworks.core.store import Store

    store = Store(migrate=migrate)
    try:
        yield store
    finally:
        store.close()


def principal() -> Principal:
    """Who the CLI acts as: the local OS user."""
    return local_principal()
