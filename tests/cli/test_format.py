"""The CLI's text helpers (`cli/_format.py`) and the prefix expansion of `cli/_ids.py`."""

import time

import click
import pytest

from mercato.cli._format import (
    lamports,
    moment,
    relative,
    short_id,
    short_ref,
    size,
    sol,
    table,
    when,
)
from mercato.cli._ids import expand

STAKE = "7fJrupaZXvcxYiSzuvc78YUKwk9Vhq6qxMS4JskYED39"
BUILD = "bld-" + "4f1c" + "0" * 60


def test_table_puts_a_header_row_over_aligned_columns(capsys) -> None:
    table(("NAME", "SIZE"), [("wordcount", "18.9 KiB"), ("echo", "4.5 KiB")])
    header, first, second = capsys.readouterr().out.splitlines()
    assert header.split() == ["NAME", "SIZE"]
    assert header.index("SIZE") == first.index("18.9") == second.index("4.5")


def test_short_ids_and_refs_are_prefixes_without_an_ellipsis() -> None:
    assert short_id(STAKE) == STAKE[:12]
    assert short_id(BUILD) == BUILD[:16] and short_id(BUILD).startswith("bld-4f1c")
    assert short_ref(f"{STAKE}/wordcount") == "7fJrupaZ/wordcount"
    assert short_ref("wordcount") == "wordcount"


def test_sizes_and_amounts_read_as_a_person_reads_them() -> None:
    assert [size(n) for n in (0, 812, 48_213, 3 * 1024**2 + 7, 3 * 1024**3 // 2)] == [
        "0 B",
        "812 B",
        "47.1 KiB",
        "3.0 MiB",
        "1.5 GiB",
    ]
    assert sol(50_000_000) == "0.05 SOL" and sol(-1) == "-0.000000001 SOL"
    assert lamports(1000) == "1,000 lamports"
    assert lamports(2_500_000) == "2,500,000 lamports (0.0025 SOL)"


def test_times_are_local_dates_and_how_far_away() -> None:
    now = time.time()
    assert when(0) == "never" and moment(0, never="none") == "none"
    assert when(now) == time.strftime("%Y-%m-%d %H:%M", time.localtime(now))
    assert relative(now + 23 * 3600 + 30, now) == "in 23 h"
    assert relative(now - 300, now) == "5 min ago"
    assert relative(now + 3 * 86_400, now) == "in 3 d"
    assert relative(now, now) == "now"
    later = now + 86_400 - 60
    assert moment(later) == f"{when(later)} (in 23 h)"


def test_expand_finds_the_one_candidate_a_prefix_starts() -> None:
    pool = [STAKE, "7fJrOther" + "1" * 35, "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM"]
    assert expand(STAKE, pool, "channel") == STAKE  # the whole id, as it is
    assert expand("7fJru", pool, "channel") == STAKE
    assert expand("9WzD", pool, "channel") == pool[2]


def test_expand_names_the_candidates_of_an_ambiguous_prefix() -> None:
    pool = [STAKE, "7fJrOther" + "1" * 35]
    with pytest.raises(click.BadParameter) as ambiguous:
        expand("7fJr", pool, "channel")
    assert "ambiguous" in str(ambiguous.value)
    assert "7fJrupaZ" in str(ambiguous.value) and "7fJrOthe" in str(ambiguous.value)
    with pytest.raises(click.BadParameter, match=r"no channel starts with 'zzzz'.*channel ls"):
        expand("zzzz", pool, "channel", hint="see `mercato channel ls`")
    with pytest.raises(click.BadParameter, match="too short"):
        expand("7f", pool, "channel")
