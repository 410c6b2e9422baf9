"""Runs take turns for memory (machine.admission): a run waits in line while the runs going would leave no room
for it, first come first served; a release, a stop or a dead process gives the room back; the cores are split.
The free memory is given to the ledger here, so what is admitted does not depend on this machine's load."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from helpers import wait_for

from workbench.machine import admission
from workbench.machine.admission import Ledger

GiB = 2**30


def ledger(tmp_path, free_gib: float = 100, slots: int = 8) -> Ledger:
    return Ledger(tmp_path / "admission.sqlite", free=lambda device: int(free_gib * GiB), slots=slots)


def in_thread(book: Ledger, nbytes: int, label: str, admitted: list, places: list | None = None, stop=None):
    """reserve() in a thread of its own; `admitted` gets (label, ticket) when it is let in."""

    def wait() -> None:
        ticket = book.reserve(nbytes, "cpu", label, on_wait=(places.append if places is not None else None), stop=stop)
        admitted.append((label, ticket))

    t = threading.Thread(target=wait, daemon=True)
    t.start()
    return t


def test_runs_that_fit_together_go_together(tmp_path):
    book = ledger(tmp_path)
    a, b = book.reserve(GiB, label="a"), book.reserve(GiB, label="b")
    assert book.going() == 2 and book.waiting() == []
    a.release()
    b.release()
    assert book.going() == 0


def test_a_run_waits_for_memory_then_goes_when_the_first_ends(tmp_path):
    book = ledger(tmp_path, free_gib=3)
    first = book.reserve(2 * GiB, label="ana")
    admitted, places = [], []
    t = in_thread(book, 2 * GiB, "bo", admitted, places)
    wait_for(lambda: places, 20)
    assert admitted == [] and book.waiting() == ["bo"]
    assert places[0].position == 1 and places[0].running == 1 and places[0].reserved == 2 * GiB
    assert places[0].text().startswith("waiting for its turn: 1st in line (1 run going, 2.0 GiB reserved)")
    first.release()
    t.join(10)
    assert [label for label, _ in admitted] == ["bo"] and book.going() == 1
    admitted[0][1].release()


def test_first_come_first_served_a_small_run_does_not_jump_the_line(tmp_path):
    book = ledger(tmp_path, free_gib=3)
    first = book.reserve(2 * GiB, label="a")
    admitted = []
    big = in_thread(book, 2 * GiB, "b", admitted)
    wait_for(lambda: book.waiting() == ["b"], 20)
    small = in_thread(book, GiB // 2, "c", admitted)  # would fit now, but b came first
    wait_for(lambda: book.waiting() == ["b", "c"], 20)
    time.sleep(3 * admission.POLL_S)
    assert admitted == []
    first.release()
    big.join(10)
    small.join(10)
    assert [label for label, _ in admitted] == ["b", "c"]  # b, then c beside it (2.5 of 3 GiB)
    for _, ticket in admitted:
        ticket.release()


def test_on_the_cpu_at_most_one_run_a_core_and_each_its_share_of_threads(tmp_path):
    book = ledger(tmp_path, slots=2)
    a, b = book.reserve(GiB, label="a"), book.reserve(GiB, label="b")
    assert a.threads(8) == 1 and b.threads(8) == 1
    admitted = []
    t = in_thread(book, GiB, "c", admitted)
    wait_for(lambda: book.waiting() == ["c"], 20)
    a.release()
    t.join(10)
    assert [label for label, _ in admitted] == ["c"]
    b.release()
    assert admitted[0][1].threads(8) == 2 and admitted[0][1].threads(1) == 1  # alone: every core, never more
    admitted[0][1].release()


def test_stop_while_waiting_leaves_the_line_and_holds_nothing(tmp_path):
    book = ledger(tmp_path, slots=1)
    first = book.reserve(GiB, label="a")
    stop, admitted = threading.Event(), []
    t = in_thread(book, GiB, "b", admitted, stop=stop)
    wait_for(lambda: book.waiting() == ["b"], 20)
    stop.set()
    t.join(10)
    assert admitted == [("b", None)] and book.waiting() == [] and book.going() == 1
    first.release()


CHILD = """
import sys, time
from workbench.machine.admission import Ledger
ticket = Ledger(sys.argv[1], free=lambda d: 1 << 40, slots=1).reserve(1 << 30, "cpu", "killed")
print("admitted", flush=True)
time.sleep(600)
"""


def test_a_killed_process_gives_its_turn_back(tmp_path):
    path = tmp_path / "admission.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True, env={**os.environ}
    )
    try:
        assert child.stdout.readline().strip() == "admitted"
        book = Ledger(path, free=lambda d: 1 << 40, slots=1)
        admitted = []
        t = in_thread(book, GiB, "next", admitted)
        wait_for(lambda: book.waiting() == ["next"], 20)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        t.join(15)
        assert [label for label, _ in admitted] == ["next"]
        admitted[0][1].release()
    finally:
        child.kill()


def test_what_a_going_run_holds_counts_as_coming_back(tmp_path):
    book = ledger(tmp_path)
    ticket = book.reserve(GiB, label="a")
    grown = bytearray(200 * 2**20)  # the run's model, say
    grown[::4096] = b"x" * len(grown[::4096])  # touched, so resident
    assert book.held("cpu") >= 150 * 2**20
    ticket.release()
    assert book.held("cpu") == 0
    del grown


def test_the_estimated_start_follows_the_runs_that_finished(tmp_path):
    book = ledger(tmp_path, slots=1)
    book.reserve(GiB, label="done").release()  # one finished run: a typical duration to go by
    first = book.reserve(GiB, label="a")
    admitted, places = [], []
    t = in_thread(book, GiB, "b", admitted, places)
    wait_for(lambda: places, 20)
    assert places[0].eta_s is not None and places[0].eta_s < 60
    first.release()
    t.join(10)
    admitted[0][1].release()


def test_runs_do_not_take_turns_when_switched_off(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_ADMISSION", "off")
    assert admission.take_turn(GiB, "cpu", "x", print, None) is None and admission.held_by_runs("cpu") == 0


@pytest.mark.parametrize("n", [1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111])
def test_places_are_said_as_people_say_them(n):
    said = {1: "1st", 2: "2nd", 3: "3rd", 4: "4th", 11: "11th", 12: "12th", 13: "13th", 21: "21st", 22: "22nd"}
    said |= {101: "101st", 111: "111th"}
    assert admission.ordinal(n) == said[n]


def test_a_home_the_ledger_cannot_be_made_in_lets_the_run_go_and_says_so(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.write_text("a file where the folder would be")
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    said = []
    assert admission.take_turn(GiB, "cpu", "x", said.append, None) is None
    assert said and "does not take turns" in said[0] and admission.held_by_runs("cpu") == 0


def test_a_run_with_none_going_beside_it_goes_whatever_the_free_memory(tmp_path):
    book = ledger(tmp_path, free_gib=0.001)  # the fit check was skipped: waiting would free nothing
    ticket = book.reserve(2 * GiB, label="alone")
    assert book.going() == 1
    ticket.release()
