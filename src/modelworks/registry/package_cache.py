"""A verified local copy of a model version's package, kept under
``$MODELWORKS_HOME/cache/models/<version id>`` so that loading a version twice downloads it
once. Every load re-checks the package's checksums; a copy that fails is fetched again.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from modelworks.core.errors import CorruptData

if TYPE_CHECKING:
    from modelworks.training.package import ModelPackage

__all__ = ["cached_package"]


def cached_package(
    home: Path,
    version_id: str,
    download: Callable[[Path], object],
    *,
    trust: bool = False,
) -> ModelPackage:
    """The package of ``version_id``, from the cache or ``download(folder)`` into it."""
    from modelworks.training.package import load_package

    cache = home / "cache" / "models" / version_id
    if cache.exists():
        try:
            return load_package(cache, trust=trust)
        except CorruptData:  # a damaged or half-written copy: fetch it again
            shutil.rmtree(cache, ignore_errors=True)
    download(cache)
    return load_package(cache, trust=trust)
