import itertools
import json
import sqlite3
import threading
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from mercato.node import SCHEMA_VERSION, Database, StoreError, node_database, open_node_store
from mercato.node._events import append_event, event_head, list_events, verify_events


def test_migrations_set_the_schema_version_and_wal(tmp_path: Path) -> None:
    db = node_database(tmp_path / "node.db")
    assert db.schema_version == SCHEMA_VERSION
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    again = node_database(tmp_path / "node.db")  # reopening migrates nothing twice
    assert again.schema_version == SCHEMA_VERSION
    again.close()


def test_a_newer_schema_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="upgrade mercato"):
        node_database(path)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="cannot open"):
        node_database(path)


async def test_store_calls_run_off_the_trio_thread(tmp_path: Path) -> None:
    loop_thread = threading.get_ident()
    async with open_node_store(tmp_path / "node.db") as store:
        ran_in = await store.run(threading.get_ident)
        event = await store.run(append_event, store.db, "test.thing", {"n": 1})
    assert ran_in != loop_thread
    assert event.seq == 1


async def test_appends_from_many_tasks_are_serialised_into_one_chain(tmp_path: Path) -> None:
    # Without the store's one-at-a-time limiter, these would interleave
    # transactions on one connection and fail.
    async with open_node_store(tmp_path / "node.db") as store:
        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(store.run, append_event, store.db, "test.n", {"i": i})
        report = await store.run(verify_events, store.db)
    assert report.ok and report.checked == 40


@pytest.fixture
def log_db(tmp_path: Path):
    db = node_database(tmp_path / "node.db")
    for i in range(5):
        append_event(db, "test.n", {"i": i, "text": "é"})
    yield db
    db.close()


def test_chain_links_each_entry_to_the_one_before(log_db: Database) -> None:
    events = list_events(log_db)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert events[0].prev_hash == "00" * 32
    for before, after in itertools.pairwise(events):
        assert after.prev_hash == before.hash
    assert event_head(log_db) == (5, events[-1].hash)
    report = verify_events(log_db)
    assert report.ok and report.checked == 5 and report.head == events[-1].hash


def test_the_table_refuses_updates_and_deletes(log_db: Database) -> None:
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        log_db.conn.execute("UPDATE events SET kind = 'x' WHERE seq = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        log_db.conn.execute("DELETE FROM events WHERE seq = 2")


def _tamper(db: Database, sql: str, *args: object) -> None:
    db.conn.execute("DROP TRIGGER IF EXISTS events_no_update")
    db.conn.execute("DROP TRIGGER IF EXISTS events_no_delete")
    db.conn.execute(sql, args)


def test_an_altered_entry_is_named(log_db: Database) -> None:
    _tamper(log_db, "UPDATE events SET data = ? WHERE seq = 3", '{"i":99,"text":"é"}')
    report = verify_events(log_db)
    assert not report.ok and report.first_bad == 3 and report.checked == 2
    assert "altered" in report.reason


def test_a_removed_entry_is_named(log_db: Database) -> None:
    _tamper(log_db, "DELETE FROM events WHERE seq = 2")
    report = verify_events(log_db)
    assert not report.ok and report.first_bad == 2 and "missing" in report.reason


def test_a_link_of_the_wrong_type_is_named_not_a_crash(log_db: Database) -> None:
    _tamper(log_db, "UPDATE events SET prev_hash = 'abc' WHERE seq = 2")
    report = verify_events(log_db)
    assert not report.ok and report.first_bad == 2
    _tamper(log_db, "UPDATE events SET data = 'not json' WHERE seq = 3")
    assert list_events(log_db)[2].data == {"corrupt": "not json"}


def test_a_rewritten_chain_link_is_named(log_db: Database) -> None:
    _tamper(log_db, "UPDATE events SET prev_hash = ? WHERE seq = 4", bytes(32))
    report = verify_events(log_db)
    assert not report.ok and report.first_bad == 4 and "prev_hash" in report.reason


@settings(max_examples=30, deadline=None)
@given(
    seq=st.integers(1, 5),
    column=st.sampled_from(["ts", "kind", "data"]),
    suffix=st.text(min_size=1, max_size=5),
)
def test_any_change_to_any_entry_is_detected(
    tmp_path_factory, seq: int, column: str, suffix: str
) -> None:
    db = node_database(tmp_path_factory.mktemp("h") / "node.db")
    for i in range(5):
        append_event(db, "test.n", {"i": i})
    if column == "data":
        _tamper(
            db, "UPDATE events SET data = ? WHERE seq = ?", json.dumps({"i": seq, "x": suffix}), seq
        )
    else:
        _tamper(db, f"UPDATE events SET {column} = {column} || ? WHERE seq = ?", suffix, seq)
    report = verify_events(db)
    db.close()
    assert not report.ok and report.first_bad == seq
