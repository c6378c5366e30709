"""Package export: verified folder copies, reproducible tarballs, safe imports, deployables."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from modelworks import __version__
from modelworks.core.errors import AlreadyExists, CorruptData, InvalidInput, PayloadTooLarge
from modelworks.registry.export import (
    build_deployable,
    export_folder,
    export_tarball,
    import_package,
)
from modelworks.training.package import load_package, save_package


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.Series]:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X = X.iloc[:200, :5]
    X.columns = ["radius", "texture", "perimeter", "area", "smoothness"]
    return X, y.iloc[:200]


@pytest.fixture(scope="module")
def model(data: tuple[pd.DataFrame, pd.Series]) -> LogisticRegression:
    X, y = data
    return LogisticRegression(max_iter=5000).fit(X, y)


@pytest.fixture
def package(tmp_path: Path, data: tuple[pd.DataFrame, pd.Series], model: Any) -> Path:
    X, _ = data
    save_package(model, tmp_path / "pkg", input_example=X.head(), metrics={"auc": 0.9})
    return tmp_path / "pkg"


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive, "r:gz") as tar:
        out = {}
        for m in tar.getmembers():
            f = tar.extractfile(m) if m.isfile() else None
            out[m.name] = f.read() if f else b""
        return out


def _write_tar(path: Path, entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, payload in entries:
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return path


def _file(name: str, payload: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    return info, payload


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_tarball_round_trip_predicts_identically(
    package: Path, tmp_path: Path, data: tuple[pd.DataFrame, pd.Series]
) -> None:
    X, _ = data
    archive = export_tarball(package, tmp_path / "out" / "model.tar.gz")
    assert archive == tmp_path / "out" / "model.tar.gz" and archive.is_file()
    names = list(_members(archive))
    assert names == sorted(names) and names[0] == "package"
    assert "package/model.yaml" in names and "package/model/model.skops" in names

    meta = import_package(archive, tmp_path / "imported")
    assert meta.metrics == {"auc": 0.9}
    original, imported = load_package(package), load_package(tmp_path / "imported")
    np.testing.assert_array_equal(imported.predict(X), original.predict(X))
    np.testing.assert_array_equal(imported.predict_proba(X), original.predict_proba(X))
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "out") == []


def test_tarball_bytes_are_reproducible(package: Path, tmp_path: Path) -> None:
    first = export_tarball(package, tmp_path / "a.tar.gz").read_bytes()
    (package / "model.yaml").touch()  # a newer mtime on disk must not show in the archive
    second = export_tarball(package, tmp_path / "b.tar.gz").read_bytes()
    assert hashlib.sha256(first).digest() == hashlib.sha256(second).digest()
    with tarfile.open(tmp_path / "a.tar.gz", "r:gz") as tar:
        infos = tar.getmembers()
    created = yaml.safe_load((package / "model.yaml").read_text())["created_at"]
    assert {(i.uid, i.gid, i.uname, i.gname) for i in infos} == {(0, 0, "", "")}
    assert {i.mtime for i in infos} == {int(pd.Timestamp(created).timestamp())}
    assert gzip.decompress(first)  # a plain gzip stream
    assert first[4:8] == b"\x00\x00\x00\x00"  # no timestamp in the gzip header


def test_export_refuses_a_damaged_package_and_an_occupied_destination(
    package: Path, tmp_path: Path
) -> None:
    (tmp_path / "taken.tar.gz").write_bytes(b"x")
    with pytest.raises(AlreadyExists, match=r"taken\.tar\.gz already exists.*overwrite=True"):
        export_tarball(package, tmp_path / "taken.tar.gz")
    assert (tmp_path / "taken.tar.gz").read_bytes() == b"x"
    export_tarball(package, tmp_path / "taken.tar.gz", overwrite=True)
    assert "package/model.yaml" in _members(tmp_path / "taken.tar.gz")

    with open(package / "model" / "model.skops", "ab") as f:
        f.write(b"tampered")
    with pytest.raises(CorruptData, match=r"model/model\.skops does not match its checksum"):
        export_tarball(package, tmp_path / "bad.tar.gz")
    with pytest.raises(CorruptData, match=r"model/model\.skops does not match its checksum"):
        export_folder(package, tmp_path / "copy")
    assert not (tmp_path / "bad.tar.gz").exists() and not (tmp_path / "copy").exists()
    assert _leftovers(tmp_path) == []


def test_export_folder_is_a_verified_copy(package: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    out = export_folder(package, tmp_path / "empty")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "model.yaml",
        "model/model.skops",
        "requirements.txt",
    ]
    assert (out / "model.yaml").read_bytes() == (package / "model.yaml").read_bytes()
    with pytest.raises(AlreadyExists, match=r"empty already exists and is not empty"):
        export_folder(package, out)


def test_import_rejects_a_tampered_file_and_leaves_nothing(package: Path, tmp_path: Path) -> None:
    archive = export_tarball(package, tmp_path / "good.tar.gz")
    entries = []
    with tarfile.open(archive, "r:gz") as tar:
        for m in tar.getmembers():
            f = tar.extractfile(m) if m.isfile() else None
            payload = f.read() if f else None
            if m.name == "package/model/model.skops" and payload is not None:
                payload = payload[:-1] + bytes([payload[-1] ^ 1])
            entries.append((m, payload))
    bad = _write_tar(tmp_path / "bad.tar.gz", entries)
    with pytest.raises(CorruptData, match=r"bad\.tar\.gz failed verification: model/model\.skops"):
        import_package(bad, tmp_path / "dest")
    assert not (tmp_path / "dest").exists() and _leftovers(tmp_path) == []


def test_import_rejects_a_truncated_archive(package: Path, tmp_path: Path) -> None:
    data = export_tarball(package, tmp_path / "good.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptData, match=r"cut\.tar\.gz is not a readable \.tar\.gz"):
        import_package(tmp_path / "cut.tar.gz", tmp_path / "dest")
    assert not (tmp_path / "dest").exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (_file("../evil.txt", b"x"), r"'\.\./evil\.txt' points outside the archive"),
        (_file("package/../../evil.txt", b"x"), r"points outside the archive"),
        (_file("/etc/evil.txt", b"x"), r"'/etc/evil\.txt' has an absolute path"),
    ],
)
def test_import_rejects_path_traversal(
    package: Path, tmp_path: Path, entry: tuple[tarfile.TarInfo, bytes], reason: str
) -> None:
    good = _members(export_tarball(package, tmp_path / "good.tar.gz"))
    entries = [_file(name, payload) for name, payload in good.items() if payload]
    bad = _write_tar(tmp_path / "bad.tar.gz", [*entries, entry])
    with pytest.raises(CorruptData, match=reason):
        import_package(bad, tmp_path / "dest")
    assert not (tmp_path / "dest").exists() and not (tmp_path.parent / "evil.txt").exists()
    assert _leftovers(tmp_path) == []


def test_import_rejects_links_and_devices(package: Path, tmp_path: Path) -> None:
    good = _members(export_tarball(package, tmp_path / "good.tar.gz"))
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = [
        _file(name, payload) for name, payload in good.items() if payload
    ]
    link = tarfile.TarInfo("package/model/extra")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with pytest.raises(CorruptData, match=r"'package/model/extra' is a link \(to '/etc/passwd'\)"):
        import_package(
            _write_tar(tmp_path / "sym.tar.gz", [*entries, (link, None)]), tmp_path / "d"
        )
    hard = tarfile.TarInfo("package/hard")
    hard.type, hard.linkname = tarfile.LNKTYPE, "package/model.yaml"
    with pytest.raises(CorruptData, match=r"'package/hard' is a link"):
        import_package(
            _write_tar(tmp_path / "lnk.tar.gz", [*entries, (hard, None)]), tmp_path / "d"
        )
    dev = tarfile.TarInfo("package/dev")
    dev.type = tarfile.CHRTYPE
    with pytest.raises(CorruptData, match=r"'package/dev' is a device, pipe or other special"):
        import_package(_write_tar(tmp_path / "dev.tar.gz", [*entries, (dev, None)]), tmp_path / "d")
    twice = _write_tar(tmp_path / "twice.tar.gz", [*entries, entries[0]])
    with pytest.raises(CorruptData, match=r"holds 'package/model\.yaml' twice"):
        import_package(twice, tmp_path / "d")
    assert not (tmp_path / "d").exists() and _leftovers(tmp_path) == []


def test_import_bounds_the_unpacked_size(package: Path, tmp_path: Path) -> None:
    archive = export_tarball(package, tmp_path / "good.tar.gz")
    with pytest.raises(PayloadTooLarge, match=r"unpacks to more than 1000 bytes"):
        import_package(archive, tmp_path / "dest", max_bytes=1000)
    with pytest.raises(
        PayloadTooLarge, match=r"has more than 3 entries, the limit for a package archive"
    ):
        import_package(archive, tmp_path / "dest", max_members=3)
    assert not (tmp_path / "dest").exists()


def test_import_from_a_folder_and_from_a_flat_archive(package: Path, tmp_path: Path) -> None:
    meta = import_package(package, tmp_path / "from-folder")
    assert (
        meta.flavor == "sklearn" and (tmp_path / "from-folder" / "model" / "model.skops").is_file()
    )
    flat = tmp_path / "flat.tar.gz"
    with tarfile.open(flat, "w:gz") as tar:  # made by hand: `tar czf flat.tar.gz -C pkg .`
        tar.add(package, arcname=".")
    assert import_package(flat, tmp_path / "from-flat").files == meta.files
    _write_tar(tmp_path / "none.tar.gz", [_file("readme.txt", b"hi")])
    with pytest.raises(CorruptData, match=r"holds no model package: there is no model\.yaml"):
        import_package(tmp_path / "none.tar.gz", tmp_path / "from-none")


def test_deployable_folder(package: Path, tmp_path: Path) -> None:
    out = build_deployable(package, tmp_path / "deploy", model_name="churn", version=3, port=9000)
    assert sorted(p.name for p in out.iterdir()) == [
        ".dockerignore",
        "Dockerfile",
        "README.md",
        "package",
        "requirements.txt",
    ]
    meta = yaml.safe_load((package / "model.yaml").read_text())
    requirements = (out / "requirements.txt").read_text().splitlines()
    assert requirements[0] == f"modelworks=={__version__}"
    assert f"scikit-learn=={meta['frameworks']['scikit-learn']}" in requirements
    assert f"skops=={meta['frameworks']['skops']}" in requirements
    assert any(r.startswith("numpy==") for r in requirements)
    assert all("==" in r for r in requirements) and len(requirements) == len(set(requirements))
    assert not any(r.startswith("onnxruntime") for r in requirements)

    dockerfile = (out / "Dockerfile").read_text()
    major_minor = ".".join(meta["python_version"].split(".")[:2])
    assert f"FROM python:{major_minor}-slim\n" in dockerfile
    assert "RUN pip install --no-cache-dir -r /opt/model/requirements.txt\n" in dockerfile
    assert "COPY package /opt/model/package\n" in dockerfile
    assert "\nUSER modelworks\n" in dockerfile and "EXPOSE 9000\n" in dockerfile
    assert "http://127.0.0.1:9000/v2/health/ready" in dockerfile
    assert dockerfile.rstrip().endswith(
        'CMD ["modelworks", "serve", "/opt/model/package", "--host", "0.0.0.0", "--port", "9000"]'
    )
    assert 'org.opencontainers.image.version="3"' in dockerfile
    assert dockerfile.index("USER modelworks") > dockerfile.index("pip install")
    assert "!package/**" in (out / ".dockerignore").read_text()
    readme = (out / "README.md").read_text()
    assert (
        "docker build -t churn:3 ." in readme and "docker run --rm -p 9000:9000 churn:3" in readme
    )
    assert load_package(out / "package").meta.files == load_package(package).meta.files

    with pytest.raises(AlreadyExists, match=r"deploy already exists and is not empty"):
        build_deployable(package, out, model_name="churn")
    again = build_deployable(package, out, model_name="churn", overwrite=True)
    assert "org.opencontainers.image.version" not in (again / "Dockerfile").read_text()
    assert _leftovers(tmp_path) == []


def test_deployable_refuses_bad_arguments(package: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"model_name must be .* got 'bad name; rm'"):
        build_deployable(package, tmp_path / "d", model_name="bad name; rm")
    with pytest.raises(InvalidInput, match=r"port must be an integer from 1 to 65535; got 0"):
        build_deployable(package, tmp_path / "d", model_name="churn", port=0)
    with pytest.raises(InvalidInput, match=r"version must be a positive integer or None; got 0"):
        build_deployable(package, tmp_path / "d", model_name="churn", version=0)
    assert not (tmp_path / "d").exists()


def test_a_folder_with_a_link_is_refused(package: Path, tmp_path: Path) -> None:
    (package / "model" / "model.skops").rename(tmp_path / "elsewhere.skops")
    (package / "model" / "model.skops").symlink_to(tmp_path / "elsewhere.skops")
    with pytest.raises(CorruptData, match=r"model\.skops is a symbolic link; a model package"):
        import_package(package, tmp_path / "dest")
    with pytest.raises(CorruptData, match=r"model\.skops is a symbolic link"):
        export_tarball(package, tmp_path / "out.tar.gz")
    assert not (tmp_path / "dest").exists() and not (tmp_path / "out.tar.gz").exists()
