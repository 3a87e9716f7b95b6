"""A full disk is an error the node reports and survives, not a crash.

SQLite's own limit on a database's pages (``PRAGMA max_page_count``) makes it
answer exactly as on a full disk (SQLITE_FULL, "database or disk is full"), so
these tests need no tmpfs; scripts/chaos.py's `disk` nemesis fills a real one.
"""

from pathlib import Path

import pytest

from mercato.node import StoreError, StoreFull, open_node_store
from mercato.node._events import append_event, list_events
from mercato.node.control._errors import ERRORS


def _cap_at_current_size(db) -> None:
    pages = db.conn.execute("PRAGMA page_count").fetchone()[0]
    db.conn.execute(f"PRAGMA max_page_count = {pages}")


def _uncap(db) -> None:
    db.conn.execute("PRAGMA max_page_count = 1073741823")


def _append_big(db, i: int) -> None:
    append_event(db, "test.big", {"i": i, "text": "x" * 200_000})


async def test_a_full_disk_is_store_full_writes_nothing_and_the_store_goes_on(
    tmp_path: Path,
) -> None:
    async with open_node_store(tmp_path / "node.db") as store:
        await store.run(append_event, store.db, "test.small", {"i": 0})
        await store.run(_cap_at_current_size, store.db)
        with pytest.raises(StoreFull, match="is full, so nothing was written"):
            await store.run(_append_big, store.db, 1)
        kinds = [e.kind for e in await store.run(list_events, store.db, 0, 10, None)]
        assert kinds == ["test.small"]  # the failed append left nothing behind
        await store.run(_uncap, store.db)  # space freed: the same store writes again
        await store.run(_append_big, store.db, 2)
        kinds = [e.kind for e in await store.run(list_events, store.db, 0, 10, None)]
        assert kinds == ["test.small", "test.big"]


async def test_other_sqlite_errors_are_not_called_a_full_disk(tmp_path: Path) -> None:
    async with open_node_store(tmp_path / "node.db") as store:
        with pytest.raises(Exception) as caught:
            await store.run(lambda: store.db.conn.execute("SELECT * FROM no_such_table"))
        assert not isinstance(caught.value, StoreError)


def test_the_control_api_answers_a_full_disk_with_507() -> None:
    assert ERRORS[StoreFull] == (507, "no_space")
