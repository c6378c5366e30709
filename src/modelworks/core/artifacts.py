"""Content-addressed artifact store (models, files, plots) on a local folder or object storage.

Every object lives at ``{root}/objects/{sha[:2]}/{sha[2:]}``, keyed by the sha256 of its
bytes, so identical bytes are stored once and every read can be checked against its key.

Writes are atomic: bytes are first written (and hashed) to a temporary file, and only a
complete file is published at its final key. On a local folder the temporary file sits in
``{root}/tmp/`` (same file system, so ``os.replace`` is atomic); on object storage it is a
local spool file, uploaded with one PUT or one completed multipart upload, both of which
S3 makes visible all at once. fsspec is the backend abstraction: there is one code path,
with only the publish step differing between a local folder and a remote store.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import posixpath
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import fsspec.core
from fsspec.implementations.local import LocalFileSystem

from modelworks.core.errors import CorruptData, InvalidInput, NotFound
from modelworks.core.ids import new_id

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

    from modelworks.core.config import Settings

CHUNK_SIZE = 1024 * 1024  # hash and copy in 1 MiB pieces; never a whole file in memory
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DRIVE = re.compile(r"[A-Za-z]:")


@dataclass(frozen=True)
class ObjectInfo:
    """What identifies a stored object: its checksum (the key) and its size in bytes."""

    sha256: str
    size: int


class ArtifactStore:
    """A content-addressed object store on fsspec: a local folder, ``file://`` or ``s3://``."""

    def __init__(self, url: str, *, storage_options: dict[str, Any] | None = None) -> None:
        options = dict(storage_options or {})
        if "://" not in url:
            url = os.path.expanduser(url)
        fs, root = fsspec.core.url_to_fs(url, **options)
        self.is_local = isinstance(fs, LocalFileSystem)
        if not self.is_local and "use_listings_cache" not in options:
            # Other processes add objects all the time; a cached listing would hide them.
            fs, root = fsspec.core.url_to_fs(url, use_listings_cache=False, **options)
        self.url = url
        self.fs: AbstractFileSystem = fs
        self.root = root.rstrip("/") or root

    @classmethod
    def from_settings(cls, settings: Settings) -> ArtifactStore:
        """The store named by ``MODELWORKS_ARTIFACT_URL`` (default: ``HOME/artifacts``)."""
        url = settings.effective_artifact_url
        options = cls.s3_options(settings) if url.startswith(("s3://", "s3a://")) else {}
        return cls(url, storage_options=options)

    @staticmethod
    def s3_options(settings: Settings) -> dict[str, Any]:
        """fsspec/s3fs options from the ``MODELWORKS_S3_*`` settings (endpoint, keys)."""
        options: dict[str, Any] = {}
        client_kwargs: dict[str, Any] = {}
        if settings.s3_endpoint_url:
            client_kwargs["endpoint_url"] = settings.s3_endpoint_url
        if settings.s3_region:
            client_kwargs["region_name"] = settings.s3_region
        if client_kwargs:
            options["client_kwargs"] = client_kwargs
        if settings.s3_access_key_id:
            options["key"] = settings.s3_access_key_id
        if settings.s3_secret_access_key:
            options["secret"] = settings.s3_secret_access_key.get_secret_value()
        return options

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r})"

    # ---- writing -----------------------------------------------------------------------
    def put_bytes(self, data: bytes) -> ObjectInfo:
        """Store ``data``; returns its checksum and size."""
        return self.put_stream(io.BytesIO(data))

    def put_file(self, path: str | os.PathLike[str]) -> ObjectInfo:
        """Store the contents of the file at ``path``, streamed in chunks."""
        with open(path, "rb") as f:
            return self.put_stream(f)

    def adopt_file(
        self, path: str | os.PathLike[str], *, hashed: ObjectInfo | None = None
    ) -> ObjectInfo:
        """Store a file that nobody else will touch again, moving rather than copying it.

        Made for large files the caller wrote itself (dataset parts): on a local store on
        the same file system the hashed file is renamed into place, which saves a full copy;
        anywhere else it is stored like :meth:`put_file`. The file is gone afterwards.
        ``hashed`` is what :func:`hash_and_sync` said of the file, unchanged since (the
        caller had it computed while doing other work).
        """
        src = os.fspath(path)
        if not self.is_local:
            try:
                return self.put_file(src)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(src)
        if hashed is not None and os.stat(src).st_size == hashed.size:
            info, synced = hashed, True
        else:
            with open(src, "rb") as f:
                sha, size = _copy_hashing(f)
            info, synced = ObjectInfo(sha256=sha, size=size), False
        try:
            if self._holds_intact(info):
                os.remove(src)
                return info
            if not synced:
                with open(src, "rb") as f:
                    os.fsync(f.fileno())
            self._publish(src, self._key(info.sha256))
        except OSError:
            # Another file system (EXDEV) or a read-only source: fall back to a copy.
            try:
                return self.put_file(src)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(src)
        return info

    def staging_dir(self) -> Path:
        """A fresh private folder for files about to be adopted (on the store's own file
        system when the store is local, so adopting them is a rename)."""
        if self.is_local:
            base = posixpath.join(self.root, "tmp")
            os.makedirs(base, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix="stage-", dir=base))
        return Path(tempfile.mkdtemp(prefix="modelworks-stage-"))

    def local_path(self, sha256: str) -> str | None:
        """Where the object lies on this machine's disk, for a local store; else None."""
        return self._key(sha256) if self.is_local else None

    def put_stream(self, fileobj: BinaryIO) -> ObjectInfo:
        """Store everything ``fileobj.read()`` yields until it is exhausted.

        The bytes are copied to a temporary file while being hashed, so what is published is
        exactly what was hashed even if the source changes or fails halfway. On any error the
        temporary file is removed and nothing appears under ``objects/``.
        """
        tmp = self._temp_path()
        try:
            with open(tmp, "wb") as out:
                sha, size = _copy_hashing(fileobj, out)
                out.flush()
                os.fsync(out.fileno())
            info = ObjectInfo(sha256=sha, size=size)
            if not self._holds_intact(info):
                self._publish(tmp, self._key(sha))
            return info
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)

    def _temp_path(self) -> str:
        if self.is_local:
            tmp_dir = posixpath.join(self.root, "tmp")
            os.makedirs(tmp_dir, exist_ok=True)
            return f"{tmp_dir}/{new_id()}"
        fd, name = tempfile.mkstemp(prefix="modelworks-spool-")
        os.close(fd)
        return name

    def _publish(self, tmp: str, key: str) -> None:
        """Make the complete temporary file visible at ``key`` in one atomic step."""
        if self.is_local:
            parent = posixpath.dirname(key)
            os.makedirs(parent, exist_ok=True)
            os.replace(tmp, key)
            _fsync_dir(parent)
        else:
            self.fs.put_file(tmp, key, ContentType="application/octet-stream")

    def _holds_intact(self, info: ObjectInfo) -> bool:
        """Whether a good copy is already stored, so the write can be skipped.

        The stored bytes are re-hashed rather than trusted on their name: a damaged object
        is then repaired by logging the same bytes again, which is what CorruptData asks
        users to do. Identical large objects are rare, so the extra read is cheap overall.
        """
        key = self._key(info.sha256)
        try:
            if self.fs.size(key) != info.size:
                return False
            with self.fs.open(key, "rb") as f:
                return _copy_hashing(f)[0] == info.sha256
        except FileNotFoundError:
            return False

    # ---- reading -----------------------------------------------------------------------
    def exists(self, sha256: str) -> bool:
        return bool(self.fs.exists(self._key(sha256)))

    def size(self, sha256: str) -> int:
        key = self._key(sha256)
        try:
            return int(self.fs.size(key))
        except FileNotFoundError:
            raise self._not_found(sha256)

    def get_bytes(self, sha256: str) -> bytes:
        """The object's bytes, checked against its checksum."""
        key = self._key(sha256)
        try:
            data = bytes(self.fs.cat_file(key))
        except FileNotFoundError:
            raise self._not_found(sha256)
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise self._corrupt(sha256, actual)
        return data

    def download(self, sha256: str, dest: str | os.PathLike[str]) -> Path:
        """Write the object to ``dest``, verified; a damaged object leaves no file at ``dest``.

        The bytes go to a temporary file beside ``dest`` while being hashed and are renamed
        into place only once the checksum matches.
        """
        key = self._key(sha256)
        target = Path(dest)
        if target.is_dir():
            raise InvalidInput(
                f"Download destination {str(target)!r} is a folder; give a file path instead."
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{new_id()}.part")
        try:
            with self._open_raw(sha256, key) as src, open(tmp, "wb") as out:
                actual, _ = _copy_hashing(src, out)
                out.flush()
                os.fsync(out.fileno())
            if actual != sha256:
                raise self._corrupt(sha256, actual)
            os.replace(tmp, target)
            return target
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)

    def open_verified(self, sha256: str) -> BinaryIO:
        """A readable file holding the object's verified bytes (a local temporary copy).

        The copy is made and checked before the caller sees a single byte, so nothing ever
        reads unverified data; the file deletes itself when closed.
        """
        key = self._key(sha256)
        out: BinaryIO = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the caller
        try:
            with self._open_raw(sha256, key) as src:
                actual, _ = _copy_hashing(src, out)
            if actual != sha256:
                raise self._corrupt(sha256, actual)
            out.seek(0)
            return out
        except BaseException:
            out.close()
            raise

    def _open_raw(self, sha256: str, key: str) -> Any:
        try:
            return self.fs.open(key, "rb")
        except FileNotFoundError:
            raise self._not_found(sha256)

    # ---- keys and errors ---------------------------------------------------------------
    def _key(self, sha256: str) -> str:
        """The object's path; also the guard that keeps callers inside ``objects/``."""
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise InvalidInput(
                f"{sha256!r} is not an artifact checksum: expected a sha256 digest, "
                "64 lowercase hexadecimal characters."
            )
        return f"{self.root}/objects/{sha256[:2]}/{sha256[2:]}"

    def _not_found(self, sha256: str) -> NotFound:
        return NotFound(
            f"Artifact object {sha256} is not in the artifact store at {self.url}. "
            "Check that the checksum is right and that this is the store it was logged to "
            "(MODELWORKS_ARTIFACT_URL); otherwise log the artifact again."
        )

    def _corrupt(self, sha256: str, actual: str) -> CorruptData:
        return CorruptData(
            f"Artifact object {sha256} in {self.url} is damaged: the stored bytes do not match "
            f"their checksum (they hash to {actual}). The artifact must be re-logged to store a "
            "good copy.",
            sha256=sha256,
        )


def validate_relative_path(path: str) -> str:
    """Check a user-given artifact path (``plots/confusion.png``) and return it normalised.

    Backslashes become ``/``; empty and ``.`` segments are dropped. Rejected: an empty path,
    an absolute path or drive letter, NUL bytes, ``..`` and any other name made only of dots
    and white space (Windows trims trailing dots and spaces, so ``.. `` would act as ``..``). A
    logical path can therefore never point outside the run it belongs to, and the result
    is a fixed point: validating it again returns it unchanged.
    """
    allowed = "Use a relative path of names separated by '/', such as 'plots/confusion.png'."
    if not isinstance(path, str):
        raise InvalidInput(f"Artifact path must be a string, not {type(path).__name__}. {allowed}")
    if "\x00" in path:
        raise InvalidInput(f"Artifact path {path!r} contains a NUL byte. {allowed}")
    posix = path.replace("\\", "/")
    if not posix.strip():
        raise InvalidInput(f"Artifact path is empty. {allowed}")
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if posix.startswith("/") or (parts and _DRIVE.match(parts[0])):
        raise InvalidInput(f"Artifact path {path!r} is absolute. {allowed}")
    if not parts:
        raise InvalidInput(f"Artifact path {path!r} names no file. {allowed}")
    for part in parts:
        if part == "..":
            raise InvalidInput(f"Artifact path {path!r} contains a '..' segment. {allowed}")
        if not part.replace(".", "").strip():  # "...", " ", "\r", ". \t"
            raise InvalidInput(
                f"Artifact path {path!r} has a name made only of dots and spaces (any white "
                f"space counts) ({part!r}). {allowed}"
            )
    return "/".join(parts)


def hash_and_sync(path: str | os.PathLike[str]) -> ObjectInfo:
    """A file's sha256 and size, with its bytes flushed to disk: everything
    :meth:`ArtifactStore.adopt_file` does before the rename, to run ahead of it."""
    with open(path, "rb") as f:
        sha, size = _copy_hashing(f)
        os.fsync(f.fileno())
    return ObjectInfo(sha256=sha, size=size)


def _copy_hashing(src: Any, out: Any | None = None) -> tuple[str, int]:
    """Read ``src`` to the end in chunks, copying to ``out`` if given; returns sha256, size."""
    digest = hashlib.sha256()
    size = 0
    while chunk := src.read(CHUNK_SIZE):
        digest.update(chunk)
        if out is not None:
            out.write(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _fsync_dir(path: str) -> None:
    """Persist a rename in ``path`` across power loss (POSIX only; a no-op elsewhere)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
