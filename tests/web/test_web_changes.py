"""Live updates of the task board and the period page: the change marks, the feed's
``tasks`` and ``period`` events, the fragments open pages fetch, and the chart cache."""

from __future__ import annotations

import queue
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from hub.config import load_config
from hub.ledger import taskboard
from hub.ledger.board_queries import change_marks
from hub.ledger.periods import open_period
from hub.store.models import EffortRecord, Period, TaskWeightHistory
from tests.web import test_web_app as base
from tests.web.test_web_app import T0, login
from tests.web.test_web_board import board_order, close_a_period
from web.state import LiveFeed, WebState

app, client, sm = base.app, base.client, base.sm
fast_hashes = base.fast_hashes

CFG = load_config(env={}, search=())


def _now() -> datetime:
    return datetime.now(UTC)


def _station_effort(s: Any) -> None:
    s.add(
        EffortRecord(
            key="station-1",
            member="bob",
            task_id="sweep",
            start=_now(),
            hours=None,
            weight=Decimal(1),
            source="station",
        )
    )


# (set-up, change) pairs: each change is one a member, a coordinator or a station makes
BOARD_CHANGES: dict[str, tuple[Callable[[Any], Any] | None, Callable[[Any], Any]]] = {
    "claim": (None, lambda s: taskboard.claim(s, "bob", "sweep", _now(), CFG)),
    "unclaim": (
        lambda s: taskboard.claim(s, "bob", "sweep", _now(), CFG),
        lambda s: taskboard.unclaim(s, "bob", "sweep"),
    ),
    "done": (
        lambda s: taskboard.claim(s, "bob", "sweep", _now(), CFG),
        lambda s: taskboard.done(s, "bob", "sweep", _now(), None, CFG),
    ),
    "want": (None, lambda s: taskboard.want(s, "bob", "sweep", _now())),
    "unwant": (
        lambda s: taskboard.want(s, "bob", "sweep", _now()),
        lambda s: taskboard.unwant(s, "bob", "sweep"),
    ),
    "propose": (None, lambda s: taskboard.propose(s, "bob", "Oil the lathe", None, 1, _now())),
    "open": (
        lambda s: taskboard.propose(s, "bob", "Oil the lathe", None, 1, _now()),
        lambda s: taskboard.set_status(s, "oil-the-lathe", "open", _now()),
    ),
    "retire": (None, lambda s: taskboard.set_status(s, "sweep", "retired", _now())),
    "pin": (None, lambda s: taskboard.pin(s, "sweep", Decimal(2))),
    "repin": (
        lambda s: taskboard.pin(s, "sweep", Decimal(2)),
        lambda s: taskboard.pin(s, "sweep", Decimal(3)),
    ),
    "unpin": (
        lambda s: taskboard.pin(s, "sweep", Decimal(2)),
        lambda s: taskboard.pin(s, "sweep", None),
    ),
    "station effort": (None, _station_effort),
}


@pytest.mark.parametrize("change", list(BOARD_CHANGES))
def test_every_board_change_moves_the_tasks_mark_and_only_it(sm, change):
    prepare, act = BOARD_CHANGES[change]
    with sm.begin() as s:
        open_period(s, CFG, _now())  # the running period exists, as after any page view
        if prepare is not None:
            prepare(s)
    with sm() as s:
        before = change_marks(s)
    with sm.begin() as s:
        act(s)
    with sm() as s:
        after = change_marks(s)
        assert change_marks(s) == after  # nothing changed: the same marks
    assert after["tasks"] != before["tasks"], change
    assert after["period"] == before["period"], change


def test_a_close_moves_the_period_mark(sm):
    with sm() as s:
        before = change_marks(s)
    close_a_period(sm)
    with sm() as s:
        assert change_marks(s)["period"] != before["period"]


def _drain(q: queue.Queue[Any]) -> list[str]:
    names = []
    while True:
        try:
            item = q.get_nowait()
        except queue.Empty:
            return names
        names.append(item[0])


def test_the_feed_tells_watching_pages_once_per_change(sm):
    feed = LiveFeed(WebState(None, sm))  # the feed's board half needs only the database
    board = feed.subscribe(frozenset({"tasks", "period"}))
    floor = feed.subscribe(frozenset({"tool", "batch"}))
    everything = feed.subscribe()
    feed.nudge()
    feed.check_board()
    assert _drain(board) == [] and _drain(everything) == []  # no change yet

    with sm.begin() as s:
        taskboard.want(s, "bob", "sweep", _now())
    feed.nudge()
    feed.check_board()
    assert _drain(board) == ["tasks"]
    assert _drain(everything) == ["tasks"]
    assert _drain(floor) == []
    feed.nudge()
    feed.check_board()
    assert _drain(board) == []  # told once

    close_a_period(sm)
    feed.nudge()
    feed.check_board()
    assert "period" in _drain(board)
    assert "period" in _drain(everything)

    feed.unsubscribe(board)
    with sm.begin() as s:
        taskboard.unwant(s, "bob", "sweep")
    feed.nudge()
    feed.check_board()  # nobody subscribed to the board any more: nothing is read or sent
    assert _drain(everything) == []


def test_the_board_fragment_is_the_pages_board(client):
    login(client, "bob")
    page = client.get("/tasks").get_data(as_text=True)
    response = client.get("/tasks/board")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    fragment = response.get_data(as_text=True)
    assert "<html" not in fragment and 'id="board"' in fragment and 'id="proposed"' in fragment
    assert board_order(fragment) == board_order(page) and len(board_order(page)) == 3
    assert 'data-fragment="/tasks/board"' in page
    assert 'data-stream="/api/v1/stream?topics=tasks,period"' in page
    assert '<script src="/static/live.js">' in page
    assert "<script>alert" not in fragment  # titles are escaped in the fragment too


def test_the_period_fragments(client, sm):
    period_id = close_a_period(sm)
    login(client, "cora")
    page = client.get(f"/periods/{period_id}").get_data(as_text=True)
    assert f'data-fragment="/periods/{period_id}/fragment"' in page
    fragment = client.get(f"/periods/{period_id}/fragment").get_data(as_text=True)
    assert "<html" not in fragment
    assert re.findall(r'data-member="([^"]+)"', fragment) == re.findall(
        r'data-member="([^"]+)"', page
    )
    # /periods shows the running period (stored by the close): its page follows that one
    running = re.search(r"<h1>Period (\d+)</h1>", client.get("/periods").get_data(as_text=True))
    assert running and int(running.group(1)) > period_id
    assert f'data-fragment="/periods/{running.group(1)}/fragment"' in client.get(
        "/periods"
    ).get_data(as_text=True)
    assert client.get("/periods/fragment").status_code == 200
    assert client.get("/periods/999999/fragment").status_code == 404


def test_fragments_need_a_login(client):
    for path in ("/tasks/board", "/periods/fragment"):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.location, path


def _points(page: str, task: str) -> list[str]:
    row = page[page.index(f'id="task-{task}"') :]
    points = re.search(r'<polyline class="line" fill="none" points="([^"]+)"', row)
    assert points, task
    return points.group(1).split()


def _closed_week(sm: Any, weeks_ago: int, weight: str) -> None:
    """A closed week in which sweep weighed ``weight`` (what a close writes)."""
    end = T0 - timedelta(weeks=weeks_ago)
    with sm.begin() as s:
        period = Period(start=end - timedelta(weeks=1), end=end)
        s.add(period)
        s.flush()
        s.add(
            TaskWeightHistory(
                task_id="sweep",
                period_id=period.id,
                weight=Decimal(weight),
                slots=2,
                volunteers=1,
                next_weight=Decimal(1),
                pinned=False,
            )
        )
        s.flush()
        period.closed_at = end  # closed last, as a close does


def test_the_weight_chart_follows_each_close(client, sm):
    login(client, "bob")
    # no closed period: the current weight alone, a flat line
    first = _points(client.get("/tasks").get_data(as_text=True), "sweep")
    assert len(first) == 2 and first[0].split(",")[1] == first[1].split(",")[1]
    _closed_week(sm, 2, "3")
    second = _points(client.get("/tasks").get_data(as_text=True), "sweep")
    assert len(second) == 2 and second != first  # 3 then 1: the kept history was read again
    _closed_week(sm, 1, "2")
    third = _points(client.get("/tasks").get_data(as_text=True), "sweep")
    assert len(third) == 3
    # the other tasks have no history: still their current weight alone
    assert len(_points(client.get("/tasks").get_data(as_text=True), "empty-dust")) == 2
