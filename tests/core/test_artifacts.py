"""The content-addressed artifact store, on a local folder and on S3."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelworks.core.artifacts import (
    CHUNK_SIZE,
    ArtifactStore,
    ObjectInfo,
    hash_and_sync,
    validate_relative_path,
)
from modelworks.core.config import Settings
from modelworks.core.errors import CorruptData, InvalidInput, NotFound

S3_OPTIONS = {"key": "testing", "secret": "testing", "client_kwargs": {"region_name": "us-east-1"}}


@pytest.fixture
def spool_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where remote stores spool uploads; a private folder so leftovers can be counted."""
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    return spool


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path, spool_dir: Path) -> ArtifactStore:
    if request.param == "local":
        return ArtifactStore(str(tmp_path / "artifacts"))
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return ArtifactStore(
        f"s3://{bucket}/prefix", storage_options={**S3_OPTIONS, "endpoint_url": endpoint}
    )


def object_path(store: ArtifactStore, sha: str) -> str:
    return f"{store.root}/objects/{sha[:2]}/{sha[2:]}"


def listing(store: ArtifactStore, sub: str) -> list[str]:
    try:
        return sorted(store.fs.find(f"{store.root}/{sub}"))
    except FileNotFoundError:
        return []


def leftovers(store: ArtifactStore, spool_dir: Path) -> list[str]:
    """Temporary files anywhere a write may have put them."""
    return listing(store, "tmp") + sorted(p.name for p in spool_dir.iterdir())


class FailingReader(io.RawIOBase):
    """A source that yields ``fail_after`` bytes, then breaks like a dropped connection."""

    def __init__(self, data: bytes, fail_after: int) -> None:
        self.buf = io.BytesIO(data)
        self.fail_after = fail_after
        self.sizes: list[int] = []

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.sizes.append(size)
        if self.buf.tell() >= self.fail_after:
            raise ConnectionResetError("source went away")
        return self.buf.read(min(size, self.fail_after - self.buf.tell()))


# ---- round trips -------------------------------------------------------------------------
def test_bytes_round_trip(store: ArtifactStore) -> None:
    info = store.put_bytes(b"hello")
    sha = hashlib.sha256(b"hello").hexdigest()
    assert info == ObjectInfo(sha256=sha, size=5)
    assert store.exists(sha)
    assert store.size(sha) == 5
    assert store.get_bytes(sha) == b"hello"
    assert listing(store, "objects") == [object_path(store, sha)]


def test_empty_object(store: ArtifactStore) -> None:
    info = store.put_bytes(b"")
    assert info.size == 0
    assert store.get_bytes(info.sha256) == b""


def test_multi_mib_file_round_trip(store: ArtifactStore, tmp_path: Path, spool_dir: Path) -> None:
    data = os.urandom(3 * CHUNK_SIZE + 123)
    src = tmp_path / "model.bin"
    src.write_bytes(data)
    info = store.put_file(src)
    assert info == ObjectInfo(hashlib.sha256(data).hexdigest(), len(data))
    dest = store.download(info.sha256, tmp_path / "out" / "model.bin")
    assert dest == tmp_path / "out" / "model.bin"
    assert dest.read_bytes() == data
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model.bin"]
    assert store.get_bytes(info.sha256) == data
    with store.open_verified(info.sha256) as f:
        assert f.read() == data
    assert leftovers(store, spool_dir) == []


def test_stream_is_read_in_chunks(store: ArtifactStore) -> None:
    data = os.urandom(2 * CHUNK_SIZE + 7)
    reader = FailingReader(data, fail_after=len(data) + 1)
    info = store.put_stream(reader)  # type: ignore[arg-type]
    assert info.size == len(data)
    assert reader.sizes and all(0 < s <= CHUNK_SIZE for s in reader.sizes)


def test_file_url(tmp_path: Path) -> None:
    store = ArtifactStore((tmp_path / "a").as_uri())
    info = store.put_bytes(b"x")
    assert (tmp_path / "a" / "objects" / info.sha256[:2] / info.sha256[2:]).read_bytes() == b"x"


# ---- dedupe ------------------------------------------------------------------------------
def test_same_bytes_are_stored_once(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch, spool_dir: Path
) -> None:
    first = store.put_bytes(b"same bytes")

    def no_second_write(tmp: str, key: str) -> None:
        raise AssertionError("an intact object was written again")

    monkeypatch.setattr(store, "_publish", no_second_write)
    assert store.put_stream(io.BytesIO(b"same bytes")) == first
    assert listing(store, "objects") == [object_path(store, first.sha256)]
    assert leftovers(store, spool_dir) == []


def test_logging_again_repairs_a_damaged_object(store: ArtifactStore) -> None:
    info = store.put_bytes(b"precious model")
    store.fs.pipe_file(object_path(store, info.sha256), b"precious MODEL")
    with pytest.raises(CorruptData):
        store.get_bytes(info.sha256)
    assert store.put_bytes(b"precious model") == info
    assert store.get_bytes(info.sha256) == b"precious model"


# ---- atomicity ---------------------------------------------------------------------------
@pytest.mark.parametrize("fail_after", [0, CHUNK_SIZE + 10])
def test_interrupted_write_leaves_nothing(
    store: ArtifactStore, spool_dir: Path, fail_after: int
) -> None:
    reader = FailingReader(os.urandom(2 * CHUNK_SIZE), fail_after=fail_after)
    with pytest.raises(ConnectionResetError):
        store.put_stream(reader)  # type: ignore[arg-type]
    assert listing(store, "objects") == []
    assert leftovers(store, spool_dir) == []


def test_failed_publish_leaves_nothing(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch, spool_dir: Path
) -> None:
    def broken(tmp: str, key: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "_publish", broken)
    with pytest.raises(OSError, match="disk full"):
        store.put_bytes(b"never stored")
    assert listing(store, "objects") == []
    assert leftovers(store, spool_dir) == []


# ---- integrity ---------------------------------------------------------------------------
@pytest.mark.parametrize("damage", [b"HELLO WORLD", b"trunc"], ids=["same-size", "truncated"])
def test_corrupt_object_is_refused(store: ArtifactStore, tmp_path: Path, damage: bytes) -> None:
    info = store.put_bytes(b"hello world")
    store.fs.pipe_file(object_path(store, info.sha256), damage)

    with pytest.raises(CorruptData) as exc:
        store.get_bytes(info.sha256)
    assert info.sha256 in exc.value.detail
    assert "do not match their checksum" in exc.value.detail
    assert "re-logged" in exc.value.detail

    dest = tmp_path / "dl" / "file.txt"
    dest.parent.mkdir()
    with pytest.raises(CorruptData):
        store.download(info.sha256, dest)
    assert list(dest.parent.iterdir()) == []

    with pytest.raises(CorruptData):
        store.open_verified(info.sha256)


def test_download_does_not_replace_dest_with_corrupt_bytes(
    store: ArtifactStore, tmp_path: Path
) -> None:
    info = store.put_bytes(b"v2")
    store.fs.pipe_file(object_path(store, info.sha256), b"xx")
    dest = tmp_path / "model.bin"
    dest.write_bytes(b"v1")
    with pytest.raises(CorruptData):
        store.download(info.sha256, dest)
    assert dest.read_bytes() == b"v1"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


# ---- errors ------------------------------------------------------------------------------
def test_unknown_object(store: ArtifactStore, tmp_path: Path) -> None:
    sha = hashlib.sha256(b"never stored").hexdigest()
    assert not store.exists(sha)
    for call in (
        lambda: store.get_bytes(sha),
        lambda: store.size(sha),
        lambda: store.download(sha, tmp_path / "x"),
        lambda: store.open_verified(sha),
    ):
        with pytest.raises(NotFound) as exc:
            call()
        assert sha in exc.value.detail
        assert "log the artifact again" in exc.value.detail
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "abc",
        "A" * 64,
        "g" * 64,
        "a" * 63,
        "a" * 65,
        "../" + "a" * 61,
        "aa/" + "a" * 61,
        "a" * 63 + "\n",
    ],
)
def test_malformed_checksum(store: ArtifactStore, tmp_path: Path, bad: str) -> None:
    for call in (
        lambda: store.get_bytes(bad),
        lambda: store.exists(bad),
        lambda: store.size(bad),
        lambda: store.download(bad, tmp_path / "x"),
        lambda: store.open_verified(bad),
    ):
        with pytest.raises(InvalidInput, match="64 lowercase hexadecimal"):
            call()


def test_download_into_a_folder_is_refused(store: ArtifactStore, tmp_path: Path) -> None:
    info = store.put_bytes(b"x")
    with pytest.raises(InvalidInput, match="is a folder"):
        store.download(info.sha256, tmp_path)


# ---- settings ----------------------------------------------------------------------------
def test_from_settings_defaults_to_home(tmp_path: Path) -> None:
    store = ArtifactStore.from_settings(Settings(home=tmp_path / "h"))
    info = store.put_bytes(b"x")
    assert (tmp_path / "h" / "artifacts" / "objects" / info.sha256[:2]).is_dir()


@pytest.mark.s3
def test_from_settings_s3(s3_endpoint: str, s3_bucket: str) -> None:
    settings = Settings(
        artifact_url=f"s3://{s3_bucket}/team",
        s3_endpoint_url=s3_endpoint,
        s3_access_key_id="testing",
        s3_secret_access_key="testing",
        s3_region="us-east-1",
    )
    store = ArtifactStore.from_settings(settings)
    info = store.put_bytes(b"remote bytes")
    assert store.get_bytes(info.sha256) == b"remote bytes"
    assert store.fs.exists(f"{s3_bucket}/team/objects/{info.sha256[:2]}/{info.sha256[2:]}")


# ---- logical paths -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("plots/confusion.png", "plots/confusion.png"),
        ("model.pkl", "model.pkl"),
        ("a\\b\\c.txt", "a/b/c.txt"),
        ("./a//b/", "a/b"),
        ("a/./b", "a/b"),
        ("..hidden/x..y", "..hidden/x..y"),
        ("dir with space/é.txt", "dir with space/é.txt"),
    ],
)
def test_relative_path_accepted(given: str, expected: str) -> None:
    assert validate_relative_path(given) == expected


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        (".", "names no file"),
        ("./", "names no file"),
        ("/etc/passwd", "absolute"),
        ("\\etc\\passwd", "absolute"),
        ("C:\\x", "absolute"),
        ("c:/x", "absolute"),
        ("../x", "'..'"),
        ("a/../../b", "'..'"),
        ("a/..", "'..'"),
        ("a\\..\\b", "'..'"),
        ("a\x00b", "NUL"),
        ("./C:x", "absolute"),
        ("a/.. ", "dots and spaces"),
        ("a/...", "dots and spaces"),
        ("a/ /b", "dots and spaces"),
        ("a\\ \\", "dots and spaces"),
        ("./\r", "dots and spaces"),  # once accepted as "\r", which then failed as empty
        ("a/\t. /b", "dots and spaces"),
    ],
)
def test_relative_path_rejected(bad: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        validate_relative_path(bad)
    assert reason in exc.value.detail
    assert "relative path" in exc.value.detail


@given(
    st.one_of(
        st.text(alphabet=st.sampled_from(["a", "b", ".", "/", "\\", ":", "C", "\x00", " "])),
        st.text(),
    )
)
def test_relative_path_output_stays_inside(path: str) -> None:
    try:
        out = validate_relative_path(path)
    except InvalidInput:
        return
    segments = out.split("/")
    assert ".." not in segments
    assert not out.startswith("/")
    assert "\\" not in out and "\x00" not in out
    assert "" not in segments and "." not in segments
    assert validate_relative_path(out) == out


def test_adopting_a_file_hashed_ahead_moves_it_into_place(
    store: ArtifactStore, tmp_path: Path
) -> None:
    """Dataset parts are hashed (and synced) on a thread while the ingest profiles them;
    adopting them then only moves them. A file whose size no longer matches what was said
    of it is hashed again rather than stored under a wrong name."""
    data = os.urandom(2 * CHUNK_SIZE + 7)
    first = tmp_path / "part-a.parquet"
    first.write_bytes(data)
    hashed = hash_and_sync(first)
    assert hashed == ObjectInfo(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    assert store.adopt_file(first, hashed=hashed) == hashed
    assert not first.exists() and store.get_bytes(hashed.sha256) == data

    second = tmp_path / "part-b.parquet"
    second.write_bytes(b"written again after it was hashed")
    stale = hash_and_sync(second)
    second.write_bytes(b"written again after it was hashed, longer")
    info = store.adopt_file(second, hashed=stale)
    assert info.sha256 == hashlib.sha256(b"written again after it was hashed, longer").hexdigest()
    assert store.get_bytes(info.sha256) == b"written again after it was hashed, longer"
