"""The task board as members use it: order, claim and done, hints, proposals, pins."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from hub.db import make_engine, migrate, session_factory
from hub.models import EffortRecord, Project, Task
from hub.periods import close_due_periods, open_period
from hub.taskboard import (
    TaskBoardError,
    board,
    claim,
    done,
    pin,
    propose,
    set_status,
    unclaim,
    want,
)
from tests.test_periods import NEXT_WEEK, WEEK, add_members, berlin

NOW = WEEK + timedelta(days=2)


@pytest.fixture
def sm(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    migrate(engine)
    factory = session_factory(engine)
    with factory.begin() as s:
        add_members(s, ["ada", "bob", "cy"])
        s.add(Project(id="commons", name="Commons", model="flat_rate"))
        s.flush()
        for tid, weight, slots in (("dust", "1.0", 4), ("intro", "1.5", 1), ("oil", "1.0", 2)):
            s.add(
                Task(
                    id=tid,
                    title=tid,
                    project_id="commons",
                    slots=slots,
                    hours=Decimal("0.5"),
                    weight=Decimal(weight),
                )
            )
    yield factory
    engine.dispose()


def test_the_board_puts_wanted_heavy_and_neglected_tasks_first(sm):
    cfg = berlin()
    with sm.begin() as s:
        assert [e.task for e in board(s, NOW, cfg)] == ["intro", "dust", "oil"]  # by weight
        want(s, "ada", "oil", NOW)
        want(s, "bob", "oil", NOW)
        assert not want(s, "bob", "oil", NOW)  # one hint per member
        entries = board(s, NOW, cfg)
        assert [e.task for e in entries] == ["oil", "intro", "dust"]  # 1.0 x 3 > 1.5
        assert entries[0].wants == 2 and entries[0].score == Decimal(3)
        # dust was last done three weeks ago: two weeks overdue, score 1 x (1 + 14/7) = 3
        s.add(
            EffortRecord(
                key="old",
                member="cy",
                task_id="dust",
                start=NOW - timedelta(days=21),
                hours=Decimal(1),
                weight=Decimal(1),
                source="station",
            )
        )
        s.flush()
        entries = {e.task: e for e in board(s, NOW, cfg)}
        assert entries["dust"].overdue_days == Decimal(14)
        assert entries["dust"].score == Decimal(3)
        # a task with no slot left this period goes to the end
        claim(s, "ada", "intro", NOW, cfg)
        assert [e.task for e in board(s, NOW, cfg)][-1] == "intro"


def test_claim_then_done_credits_the_weight_posted_at_the_claim(sm):
    cfg = berlin()
    with sm.begin() as s:
        c = claim(s, "ada", "intro", WEEK + timedelta(days=6), cfg)
        assert c.weight == Decimal("1.5")
        # the intro (1 slot, 1 claim) stays at 1.5; dust (4 slots, 1 claim) gets heavier,
        # but bob's claim keeps the weight of when he took it
        claim(s, "bob", "dust", WEEK + timedelta(days=6), cfg)
        close_due_periods(s, cfg, NEXT_WEEK)
        assert s.get(Task, "dust").weight == Decimal("1.15")
        effort = done(s, "bob", "dust", NEXT_WEEK + timedelta(hours=1), cfg=cfg)
        assert (effort.weight, effort.hours, effort.source) == (Decimal(1), Decimal("0.5"), "board")
        assert open_period(s, cfg, effort.start).start == NEXT_WEEK  # in the open period
        effort = done(s, "ada", "intro", NEXT_WEEK + timedelta(hours=2), hours="2", cfg=cfg)
        assert (effort.weight, effort.hours) == (Decimal("1.5"), Decimal(2))
        with pytest.raises(TaskBoardError, match="claim it first"):
            done(s, "cy", "dust", NEXT_WEEK, cfg=cfg)


def test_slots_are_per_period(sm):
    cfg = berlin()
    with sm.begin() as s:
        claim(s, "ada", "intro", NOW, cfg)
        with pytest.raises(TaskBoardError, match="no slot"):
            claim(s, "bob", "intro", NOW, cfg)
        with pytest.raises(TaskBoardError, match="already"):
            claim(s, "ada", "intro", NOW, cfg)
        unclaim(s, "ada", "intro")
        claim(s, "bob", "intro", NOW, cfg)
        assert claim(s, "cy", "intro", NEXT_WEEK + timedelta(hours=1), cfg).member == "cy"
        left = {e.task: e.slots_left for e in board(s, NOW, cfg)}
        assert left == {"dust": 4, "intro": 0, "oil": 2}


def test_a_proposed_task_waits_for_a_coordinator(sm):
    cfg = berlin()
    with sm.begin() as s:
        task = propose(s, "cy", "Sharpen the chisels", "commons", "1.5", NOW)
        assert task.id == "sharpen-the-chisels" and task.weight == Decimal(1)
        assert task.id not in [e.task for e in board(s, NOW, cfg)]
        assert [e.task for e in board(s, NOW, cfg, status="proposed")] == [task.id]
        with pytest.raises(TaskBoardError, match="proposed"):
            claim(s, "ada", task.id, NOW, cfg)
        set_status(s, task.id, "open", NOW)
        assert claim(s, "ada", task.id, NOW, cfg).weight == Decimal(1)
        with pytest.raises(TaskBoardError, match="no member"):
            propose(s, "nobody", "x", "commons", 1, NOW)


def test_a_pinned_weight_stays_at_close_until_unpinned(sm):
    cfg = berlin()
    with sm.begin() as s:
        pin(s, "oil", "2.5")
        with pytest.raises(TaskBoardError):
            pin(s, "oil", "9")  # outside the project's bounds
        open_period(s, cfg, NOW)
        close_due_periods(s, cfg, NEXT_WEEK)
        assert s.get(Task, "oil").weight == Decimal("2.5")
        pin(s, "oil", None)
        close_due_periods(s, cfg, NEXT_WEEK + timedelta(days=7))
        assert s.get(Task, "oil").weight == Decimal("3")
        # nobody took dust (4 slots) in two weeks: 1.0 x 1.2 x 1.2
        assert s.execute(select(Task.weight).where(Task.id == "dust")).scalar() == Decimal("1.44")
