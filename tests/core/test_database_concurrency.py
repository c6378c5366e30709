"""SQLite: writers serialise up front (BEGIN IMMEDIATE); readers never wait for a writer."""

from __future__ import annotations

import threading
import time

from sqlalchemy import text

from modelworks.core.config import Settings
from modelworks.core.store import Store


def test_reader_does_not_wait_for_a_writer(settings: Settings) -> None:
    writer_store, reader_store = Store(settings), Store(settings)
    holding, release = threading.Event(), threading.Event()

    def hold_write_lock() -> None:
        with writer_store.transaction() as s:
            s.execute(text("UPDATE projects SET description = 'busy' WHERE name = 'default'"))
            holding.set()
            release.wait(10)

    t = threading.Thread(target=hold_write_lock)
    t.start()
    assert holding.wait(10)
    start = time.monotonic()
    with reader_store.read() as s:
        before = s.execute(text("SELECT description FROM projects WHERE name = 'default'"))
        description = before.scalar_one()
    waited = time.monotonic() - start
    release.set()
    t.join()
    assert waited < 2.0, f"a read waited {waited:.1f} s for the writer"
    assert description != "busy"  # the uncommitted write is not visible
    with reader_store.read() as s:
        after = s.execute(text("SELECT description FROM projects WHERE name = 'default'"))
        assert after.scalar_one() == "busy"
    writer_store.close()
    reader_store.close()
