"""Moving model packages around: a verified folder copy, a reproducible tarball, a safe
import, and a deployable folder (package + pinned requirements + Dockerfile).

Every function verifies the package's checksums before it copies a byte, writes into a
temporary sibling of its destination and renames it into place, so a failure never leaves
a half-written folder or archive behind.

A tarball holds the package under one top-level folder, ``package/``, with its entries
sorted, owned by uid/gid 0 and dated at the package's ``created_at``: the same package
always gives the same bytes, so archives can be compared and cached by digest.

>>> export_tarball("churn-model", Path("churn.tar.gz"))  # doctest: +SKIP
>>> import_package(Path("churn.tar.gz"), Path("imported"))  # doctest: +SKIP
>>> build_deployable("churn-model", Path("deploy"), model_name="churn", version=3)  # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO

import yaml
from pydantic import ValidationError

from modelworks.core.errors import (
    AlreadyExists,
    CorruptData,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
)
from modelworks.training.flavors.base import module_version
from modelworks.training.package import (
    META_FILE,
    REQUIREMENTS_FILE,
    PackageMeta,
    verify_package,
)

__all__ = [
    "ARCHIVE_ROOT",
    "DEFAULT_MAX_BYTES",
    "build_deployable",
    "export_folder",
    "export_tarball",
    "import_package",
]

ARCHIVE_ROOT = "package"
DEFAULT_MAX_BYTES = 8 << 30  # what an archive may unpack to; far above any model we save
DEFAULT_MAX_MEMBERS = 100_000
DEPLOY_PACKAGE_DIR = "package"
CONTAINER_PACKAGE_DIR = "/opt/model/package"
HEALTH_PATH = "/v2/health/ready"
# The registry's rule for model names (registry/refs.py): safe in image labels and tags.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
_PINNED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9][A-Za-z0-9.!+_-]*)$")


# ---- destinations: temporary siblings, renamed into place ------------------------------------
def _sibling(dest: Path, suffix: str) -> Path:
    return dest.parent / f".{dest.name}.{uuid.uuid4().hex[:12]}.{suffix}"


def _check_dest(dest: Path, overwrite: bool) -> None:
    """Refuse a destination that holds something, unless ``overwrite``; an empty folder is
    fine (it is replaced)."""
    if not (dest.exists() or dest.is_symlink()):
        return
    empty_dir = dest.is_dir() and not dest.is_symlink() and not any(dest.iterdir())
    if not (empty_dir or overwrite):
        raise AlreadyExists(
            f"{dest} already exists and is not empty; choose a new destination, delete it, "
            "or pass overwrite=True."
        )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _publish(tmp: Path, dest: Path, overwrite: bool) -> None:
    """Rename ``tmp`` to ``dest``; what was at ``dest`` is moved aside first, put back if the
    rename fails, and deleted once the new one is in place."""
    if not (dest.exists() or dest.is_symlink()):
        os.replace(tmp, dest)  # a folder never lands on one that appeared meanwhile: ENOTEMPTY
        return
    _check_dest(dest, overwrite)  # again: something may have been written there meanwhile
    if tmp.is_file() and dest.is_file() and not dest.is_symlink():
        os.replace(tmp, dest)  # a file over a file is one atomic step
        return
    old = _sibling(dest, "old")
    os.replace(dest, old)
    try:
        os.replace(tmp, dest)
    except BaseException:
        os.replace(old, dest)
        raise
    _remove(old)


@contextmanager
def _staged(dest: Path, *, overwrite: bool, kind: str = "dir") -> Iterator[Path]:
    """A temporary sibling of ``dest`` to build in (a folder, or a file path for
    ``kind="file"``); published to ``dest`` on success, removed on any failure."""
    _check_dest(dest, overwrite)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(dest, "tmp")
    if kind == "dir":
        tmp.mkdir()
    try:
        yield tmp
        _publish(tmp, dest, overwrite)
    except BaseException:
        _remove(tmp)
        raise


def _copy_verified(package_dir: Path, dest: Path) -> PackageMeta:
    """Copy the package's files (as ``model.yaml`` lists them) into the existing empty
    folder ``dest`` and verify the copy, so what lands is exactly what was checked."""
    meta = verify_package(package_dir)
    for rel in [META_FILE, *meta.files]:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(package_dir / rel, target)
    return verify_package(dest)


def _reject_links(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            if path.is_symlink():
                raise CorruptData(
                    f"{path} is a symbolic link; a model package holds plain files only. "
                    "Replace the link with the file it points to."
                )


def _export_folder(source: Path, target: Path, overwrite: bool) -> PackageMeta:
    _reject_links(source)
    with _staged(target, overwrite=overwrite) as tmp:
        meta = _copy_verified(source, tmp)
    return meta


def export_folder(
    package_dir: str | os.PathLike[str], dest: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """A verified copy of the package at ``dest`` (a new or empty folder); returns ``dest``."""
    target = Path(dest)
    _export_folder(Path(package_dir), target, overwrite)
    return target


# ---- tarballs ---------------------------------------------------------------------------------
class _HashingReader:
    """A read-only file that hashes what is read through it (so the bytes archived are the
    bytes checked, even if the file changes after verification)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.digest.update(data)
        return data


def _tar_info(name: str, *, size: int, mtime: int, directory: bool) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.size = 0 if directory else size
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _parse_meta(text: bytes, where: str) -> PackageMeta:
    try:
        return PackageMeta.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError, UnicodeDecodeError) as exc:
        raise CorruptData(f"{where} is not a valid package description: {exc}") from exc


def export_tarball(
    package_dir: str | os.PathLike[str], dest: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Verify the package and write it as a reproducible ``.tar.gz`` at ``dest``.

    Entries live under ``package/``, sorted, with mode 644/755, uid/gid 0 and the package's
    ``created_at`` as mtime; the gzip header carries no name or time. Returns ``dest``.
    """
    root, target = Path(package_dir), Path(dest)
    _reject_links(root)
    verify_package(root)
    meta_bytes = (root / META_FILE).read_bytes()
    meta = _parse_meta(meta_bytes, str(root / META_FILE))
    mtime = int(meta.created_at.timestamp())
    dirs = {str(p) for rel in meta.files for p in PurePosixPath(rel).parents if str(p) != "."}
    entries = sorted([(d, True) for d in dirs] + [(f, False) for f in [META_FILE, *meta.files]])
    with _staged(target, overwrite=overwrite, kind="file") as tmp, open(tmp, "wb") as raw:
        with (
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            tar.addfile(_tar_info(ARCHIVE_ROOT, size=0, mtime=mtime, directory=True))
            for rel, directory in entries:
                name = f"{ARCHIVE_ROOT}/{rel}"
                if directory:
                    tar.addfile(_tar_info(name, size=0, mtime=mtime, directory=True))
                elif rel == META_FILE:
                    info = _tar_info(name, size=len(meta_bytes), mtime=mtime, directory=False)
                    tar.addfile(info, io.BytesIO(meta_bytes))
                else:
                    _add_checked(tar, root, rel, name, meta.files[rel], mtime)
        raw.flush()
        os.fsync(raw.fileno())
    return target


def _add_checked(
    tar: tarfile.TarFile, root: Path, rel: str, name: str, expected: str, mtime: int
) -> None:
    path = root / rel
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        reader = _HashingReader(f)
        tar.addfile(_tar_info(name, size=size, mtime=mtime, directory=False), reader)
    if reader.digest.hexdigest() != expected:
        raise CorruptData(
            f"{path} changed while it was being archived (it no longer matches its "
            "checksum); export the package again once nothing writes to it.",
            files=[rel],
        )


def _unsafe(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` may not be extracted, or None if it is a plain file or folder inside."""
    name = member.name
    parts = PurePosixPath(name).parts
    if not name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "has an absolute path"
    if ".." in parts or "\\" in name:
        return "points outside the archive"
    if member.issym() or member.islnk():
        return f"is a link (to {member.linkname!r})"
    if not (member.isfile() or member.isdir()):
        return "is a device, pipe or other special file"
    return None


def _checked_members(
    tar: tarfile.TarFile, archive: Path, max_bytes: int, max_members: int
) -> list[tarfile.TarInfo]:
    """Every entry of ``tar``, each checked as it is read (so a hostile archive is refused
    before its headers fill memory)."""
    members: list[tarfile.TarInfo] = []
    seen: set[str] = set()
    total = 0
    for member in tar:
        members.append(member)
        if len(members) > max_members:
            raise PayloadTooLarge(
                f"{archive} has more than {max_members} entries, the limit for a package "
                "archive. Pass a larger max_members= if this archive is yours."
            )
        reason = _unsafe(member)
        if reason:
            raise CorruptData(
                f"{archive} is not a safe package archive: entry {member.name!r} {reason}. "
                "Nothing was extracted; export the package again with export_tarball.",
                files=[member.name],
            )
        key = str(PurePosixPath(member.name))
        if key in seen:
            raise CorruptData(
                f"{archive} holds {member.name!r} twice, so what it unpacks to is ambiguous. "
                "Nothing was extracted; export the package again with export_tarball.",
                files=[member.name],
            )
        seen.add(key)
        total += member.size if member.isfile() else 0
        if total > max_bytes:
            raise PayloadTooLarge(
                f"{archive} unpacks to more than {max_bytes} bytes, the limit for a package "
                "archive. Pass a larger max_bytes= if this archive is yours."
            )
    return members


_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


def _extract(archive: Path, into: Path, max_bytes: int, max_members: int) -> None:
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            members = _checked_members(tar, archive, max_bytes, max_members)
            tar.extractall(into, members=members, filter="data")
    except _ARCHIVE_ERRORS as exc:
        raise CorruptData(
            f"{archive} is not a readable .tar.gz package archive ({exc}); it may be "
            "truncated or damaged. Download or export it again.",
            files=[str(archive)],
        ) from exc


def _package_root(folder: Path, archive: Path) -> Path:
    """The folder holding ``model.yaml``: the archive's top level or its single folder."""
    if (folder / META_FILE).is_file():
        return folder
    children = list(folder.iterdir())
    if len(children) == 1 and (children[0] / META_FILE).is_file():
        return children[0]
    raise CorruptData(
        f"{archive} holds no model package: there is no {META_FILE} at its top level or in "
        "a single top-level folder. Make archives with export_tarball.",
        files=[META_FILE],
    )


def import_package(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> PackageMeta:
    """Bring in a package from a folder or a ``.tar.gz`` at ``source``, verified, at ``dest``.

    Archives are checked entry by entry before anything is written: absolute paths, ``..``,
    links, devices, duplicate names, more than ``max_members`` entries or more than
    ``max_bytes`` unpacked are refused; extraction then uses tarfile's ``data`` filter.
    The unpacked package must pass :func:`verify_package`; a changed or damaged file raises
    ``CorruptData`` naming it. On any failure nothing is left at ``dest``.
    """
    src, target = Path(source), Path(dest)
    if not src.exists():
        raise NotFound(f"There is no package folder or archive at {src}.")
    if src.is_dir():
        return _export_folder(src, target, overwrite)
    _check_dest(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = _sibling(target, "import")
    work.mkdir()
    try:
        _extract(src, work, max_bytes, max_members)
        root = _package_root(work, src)
        _reject_links(root)
        try:
            meta = verify_package(root)
        except CorruptData as exc:
            files = exc.extra.get("files") or []
            raise CorruptData(
                f"The package in {src} failed verification: "
                f"{'; '.join(files) if files else exc.detail}. Do not use it; export or "
                "download the package again.",
                files=files,
            ) from exc
        _publish(root, target, overwrite)
    finally:
        _remove(work)
    return meta


# ---- deployable folder --------------------------------------------------------------------------
def _normalise_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pinned(name: str, version: str, where: str) -> str:
    line = f"{name}=={version.split('+', 1)[0]}"
    if not _PINNED.match(line):
        raise InvalidInput(
            f"{where} names {name!r} {version!r}, which is not a valid pinned requirement; "
            "fix the package's frameworks or save it again."
        )
    return line


def _requirements(package_dir: Path, meta: PackageMeta) -> list[str]:
    """Pinned ``name==version`` lines: modelworks, the package's frameworks, what its own
    requirements.txt pins, and onnxruntime when it carries an ONNX model."""
    from modelworks import __version__

    lines = [_pinned("modelworks", __version__, "This Modelworks")]
    lines += [
        _pinned(name, version, "model.yaml's frameworks")
        for name, version in meta.frameworks.items()
        if version
    ]
    req_file = package_dir / REQUIREMENTS_FILE
    own = req_file.read_text().splitlines() if req_file.is_file() else []
    for raw in own:
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PINNED.match(line)
        if not match:
            raise InvalidInput(
                f"{req_file} has {raw!r}, which is not a pinned 'name==version' requirement; "
                "a deployable image installs exact versions only. Save the package again."
            )
        lines.append(_pinned(match.group(1), match.group(2), str(req_file)))
    if meta.onnx:
        version = str(meta.onnx.get("onnxruntime_version") or module_version("onnxruntime"))
        if version:
            lines.append(_pinned("onnxruntime", version, "model.yaml's onnx section"))
    unique: dict[str, str] = {}
    for line in lines:
        unique.setdefault(_normalise_name(line.split("==", 1)[0]), line)
    return list(unique.values())


def _python_tag(meta: PackageMeta) -> str:
    match = re.match(r"^(\d+)\.(\d+)", meta.python_version or "")
    return f"{match.group(1)}.{match.group(2)}" if match else "3.11"


def _dockerfile(tag: str, model_name: str, version: int | None, port: int) -> str:
    labels = {
        "org.opencontainers.image.title": model_name,
        "org.opencontainers.image.description": f"Modelworks model server for {model_name}",
    }
    if version is not None:
        labels["org.opencontainers.image.version"] = str(version)
    label_lines = " \\\n      ".join(f"{k}={json.dumps(v)}" for k, v in labels.items())
    health = (
        "import sys, urllib.request; "
        f"sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:{port}{HEALTH_PATH}', "
        "timeout=4).status == 200 else 1)"
    )
    cmd = json.dumps(
        ["modelworks", "serve", CONTAINER_PACKAGE_DIR, "--host", "0.0.0.0", "--port", str(port)]  # noqa: S104 - the server listens inside its container
    )
    return f"""# Built by Modelworks: the model server for {model_name}.
FROM python:{tag}-slim

LABEL {label_lines}

ENV PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 modelworks \\
    && useradd --system --uid 10001 --gid modelworks --no-create-home \\
       --home-dir /opt/model --shell /usr/sbin/nologin modelworks

WORKDIR /opt/model
COPY requirements.txt /opt/model/requirements.txt
RUN pip install --no-cache-dir -r /opt/model/requirements.txt

# Owned by root and read-only for the server's user: the model cannot be changed at run time.
COPY package {CONTAINER_PACKAGE_DIR}

USER modelworks
EXPOSE {port}
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \\
    CMD ["python", "-c", {json.dumps(health)}]
CMD {cmd}
"""


_DOCKERIGNORE = """# Only what the Dockerfile copies goes into the build context.
*
!Dockerfile
!requirements.txt
!package
!package/**
"""


def _readme(model_name: str, version: int | None, port: int, meta: PackageMeta) -> str:
    label = f"{model_name} v{version}" if version is not None else model_name
    image = re.sub(r"[^a-z0-9._-]+", "-", model_name.lower()).strip("-._") or "model"
    tag = f"{image}:{version}" if version is not None else f"{image}:latest"
    onnx = " It also carries an ONNX copy of the model." if meta.onnx else ""
    return f"""# {label}: deployable model server

This folder builds a container image that serves the {meta.flavor} {meta.task} model in
`package/` (a verified Modelworks model package) with `modelworks serve`.{onnx}

- `package/`: the model package (`model.yaml` lists every file's sha256; the server checks
  them before loading).
- `requirements.txt`: exact versions of Modelworks and the model's frameworks.
- `Dockerfile`: python:{_python_tag(meta)}-slim, a non-root user, port {port}, and a health
  check on `{HEALTH_PATH}`.

## Build and run

```bash
docker build -t {tag} .
docker run --rm -p {port}:{port} {tag}
curl http://localhost:{port}{HEALTH_PATH}
```

The image installs packages from PyPI while it builds; the running container needs no
network access.
"""


def build_deployable(
    package_dir: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    model_name: str,
    version: int | None = None,
    port: int = 8080,
    overwrite: bool = False,
) -> Path:
    """A folder ``docker build`` turns into a model server image; returns ``dest``.

    It holds ``package/`` (a verified copy), ``requirements.txt`` (pinned with ``==``),
    a ``Dockerfile`` (python slim base matching the package's Python, non-root user,
    health check on ``/v2/health/ready``, ``CMD modelworks serve``), a ``.dockerignore``
    and a README. A non-empty ``dest`` is refused unless ``overwrite=True``.
    """
    if not isinstance(model_name, str) or not _MODEL_NAME.match(model_name):
        raise InvalidInput(
            f"model_name must be 1 to 200 letters, digits, '_', '.' or '-', starting with a "
            f"letter or digit (a registered model's name); got {model_name!r}."
        )
    if version is not None and (isinstance(version, bool) or version < 1):
        raise InvalidInput(f"version must be a positive integer or None; got {version!r}.")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidInput(f"port must be an integer from 1 to 65535; got {port!r}.")
    source, target = Path(package_dir), Path(dest)
    _reject_links(source)
    with _staged(target, overwrite=overwrite) as tmp:
        (tmp / DEPLOY_PACKAGE_DIR).mkdir()
        meta = _copy_verified(source, tmp / DEPLOY_PACKAGE_DIR)
        requirements = _requirements(tmp / DEPLOY_PACKAGE_DIR, meta)
        (tmp / "requirements.txt").write_text("\n".join(requirements) + "\n")
        (tmp / "Dockerfile").write_text(_dockerfile(_python_tag(meta), model_name, version, port))
        (tmp / ".dockerignore").write_text(_DOCKERIGNORE)
        (tmp / "README.md").write_text(_readme(model_name, version, port, meta))
    return target
