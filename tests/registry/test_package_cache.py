"""The local cache of model packages: one download per version, damage fetched again."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from modelworks.registry.package_cache import cached_package
from modelworks.training.package import save_package


def test_a_version_downloads_once_and_a_damaged_copy_is_fetched_again(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
    model = LogisticRegression().fit(X, (X.a > 0).astype(int))
    save_package(model, tmp_path / "source", input_example=X.head())
    downloads: list[Path] = []

    def download(folder: Path) -> None:
        downloads.append(folder)
        shutil.copytree(tmp_path / "source", folder)

    home = tmp_path / "home"
    first = cached_package(home, "v1", download)
    again = cached_package(home, "v1", download)
    assert downloads == [home / "cache" / "models" / "v1"]  # the second load read the cache
    np.testing.assert_array_equal(again.predict_proba(X), first.predict_proba(X))

    [weights] = [p for p in (home / "cache" / "models" / "v1" / "model").iterdir()
                 if p.suffix == ".skops"]  # fmt: skip
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")  # damaged on disk
    healed = cached_package(home, "v1", download)
    assert len(downloads) == 2  # the damaged copy failed its checksums and was fetched again
    np.testing.assert_array_equal(healed.predict_proba(X), model.predict_proba(X))
