"""The task board as members use it: order, claim and done, hints, proposals, pins, and
big claims that wait for a confirmation."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from hub.ledger.closing import close_due_periods
from hub.ledger.periods import open_period
from hub.ledger.taskboard import (
    ClaimStatus,
    NotAllowedError,
    TaskBoardError,
    board,
    claim,
    claim_of,
    confirm,
    done,
    may_confirm,
    pending_claims,
    pin,
    propose,
    reject,
    set_status,
    unclaim,
    want,
)
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import EffortRecord, Period, PeriodBalance, PresenceChange, Project, Task
from tests.helpers import hub_process, peershop_command, web_base
from tests.hub.ledger.test_periods import NEXT_WEEK, WEEK, add_members, berlin

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
        effort = done(s, "ada", "intro", NEXT_WEEK + timedelta(hours=2), hours="0.75", cfg=cfg)
        assert (effort.weight, effort.hours) == (Decimal("1.5"), Decimal("0.75"))
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


# --- big claims (issue 13, item 4; docs/sharing-models.md, rule (j)) --------------------


def sign_in(s: Session, member: str, at: datetime, until: datetime | None = None, site="main"):
    s.add(PresenceChange(member=member, at=at, state="in", reason="badge", site=site))
    if until is not None:
        s.add(PresenceChange(member=member, at=until, state="out", reason="badge", site=site))
    s.flush()


def balances(s: Session, period_id: int) -> dict[str, tuple[Decimal, Decimal]]:
    """(credited, balance) per member in the commons for a closed period."""
    return {
        b.member: (b.credited, b.balance)
        for b in s.scalars(select(PeriodBalance).where(PeriodBalance.period_id == period_id))
    }


def test_a_big_claim_counts_the_posted_hours_until_someone_confirms_it(sm):
    """The issue's attack: Ada claims every slot of a 0.75 h task and reports 1000 h each.
    Each done counts 0.75 h and waits; a confirmation after the close lands as a
    correction in the open period; the closed one stays as it was."""
    cfg = berlin()
    with sm.begin() as s:
        add_members(s, ["dan", "eve"])
        s.add(Task(id="sweep", title="Sweep", project_id="commons", slots=3, hours=Decimal("0.75")))
        for m in ("bob", "cy", "dan", "eve"):  # five take part this week
            sign_in(s, m, NOW)
        for i in range(3):
            claim(s, "ada", "sweep", NOW + timedelta(hours=i), cfg)
            record = done(s, "ada", "sweep", NOW + timedelta(hours=i), hours="1000", cfg=cfg)
            assert record.hours == Decimal("0.75")
            view = claim_of(s, record)
            assert view.status == ClaimStatus.PENDING and view.confirmations_needed == 1
            assert (view.hours, view.credited_hours) == (Decimal(1000), Decimal("0.75"))
        with pytest.raises(TaskBoardError, match="no slot"):
            claim(s, "ada", "sweep", NOW + timedelta(hours=4), cfg)
        assert [v.member for v in pending_claims(s)] == ["ada"] * 3
        [week] = close_due_periods(s, cfg, NEXT_WEEK)
        # E = 3 x 0.75 = 2.25 over five: Ada +1.8, everyone else -0.45 (not +2400 / -600)
        assert balances(s, week.period_id) == {
            "ada": (Decimal("2.25"), Decimal("1.8")),
            **{m: (Decimal(0), Decimal("-0.45")) for m in ("bob", "cy", "dan", "eve")},
        }
        first = pending_claims(s)[0]
        later = NEXT_WEEK + timedelta(hours=1)
        view = confirm(s, first.id, "bob", later, cfg, coordinator=True)
        assert view.status == ClaimStatus.CONFIRMED and view.credited_hours == Decimal(1000)
        assert len(pending_claims(s)) == 2
        fix = s.scalar(
            select(EffortRecord).where(EffortRecord.key == f"board:{first.id}:confirmed")
        )
        assert (fix.hours, fix.weight, fix.start) == (Decimal("999.25"), Decimal(1), later)
        assert open_period(s, cfg, later).start == NEXT_WEEK  # the open week, not the closed
        [after] = close_due_periods(s, cfg, NEXT_WEEK + timedelta(days=7))
        assert balances(s, after.period_id)["ada"][0] == Decimal("999.25")
        assert balances(s, week.period_id)["ada"] == (Decimal("2.25"), Decimal("1.8"))


def test_a_confirmation_before_the_close_counts_the_claimed_hours(sm):
    cfg = berlin()
    with sm.begin() as s:
        sign_in(s, "ada", NOW - timedelta(hours=1), NOW + timedelta(hours=3))
        sign_in(s, "bob", NOW + timedelta(hours=2), NOW + timedelta(hours=4))
        claim(s, "ada", "dust", NOW, cfg)  # posted 0.5 h
        c = claim_of(s, done(s, "ada", "dust", NOW + timedelta(hours=3), hours="2", cfg=cfg))
        assert c.status == ClaimStatus.PENDING
        view = confirm(s, c.id, "bob", NOW + timedelta(hours=5), cfg)  # bob was there
        assert view.status == ClaimStatus.CONFIRMED and view.confirmed_by == ("bob",)
        [week] = close_due_periods(s, cfg, NEXT_WEEK)
        assert balances(s, week.period_id)["ada"][0] == Decimal(2)  # 2 h at weight 1


def test_who_may_confirm_a_big_claim_and_who_rejects_it(sm):
    cfg = berlin()
    t1, t2 = NOW, NOW + timedelta(hours=2)  # the claim and the done
    with sm.begin() as s:
        add_members(s, ["dan", "eve", "fay"])
        sign_in(s, "ada", t1 - timedelta(hours=1), t2 + timedelta(hours=1))
        sign_in(s, "bob", t2 + timedelta(hours=2))  # came after the work
        sign_in(s, "cy", t1, t2, site="north")  # in, but in the other building
        sign_in(s, "dan", t1 + timedelta(minutes=10))  # in with Ada, still signed in
        sign_in(s, "fay", t1 - timedelta(days=1), t1 - timedelta(hours=20))  # the day before
        claim(s, "ada", "dust", t1, cfg)
        c = claim_of(s, done(s, "ada", "dust", t2, hours="3", cfg=cfg))
        assert [
            may_confirm(s, c, m, coordinator=False) for m in ("ada", "bob", "cy", "dan", "fay")
        ] == [False, False, False, True, False]
        assert may_confirm(s, c, "eve", coordinator=True)  # a coordinator, not there
        assert not may_confirm(s, c, "ada", coordinator=True)  # never one's own
        for member in ("bob", "cy", "fay"):
            with pytest.raises(NotAllowedError, match="signed in with ada"):
                confirm(s, c.id, member, t2, cfg)
        with pytest.raises(NotAllowedError, match="own claim"):
            confirm(s, c.id, "ada", t2, cfg, coordinator=True)
        view = reject(s, c.id, "eve", t2 + timedelta(hours=1))
        assert view.status == ClaimStatus.REJECTED and view.rejected_by == "eve"
        assert view.credited_hours == Decimal("0.5")
        with pytest.raises(TaskBoardError, match="not waiting"):
            confirm(s, c.id, "dan", t2, cfg)
        assert pending_claims(s) == []
        [week] = close_due_periods(s, cfg, NEXT_WEEK)
        assert balances(s, week.period_id)["ada"][0] == Decimal("0.5")


ATTACK_SHOP = """
projects:
  - {id: commons, name: Shop commons, model: flat_rate}
members:
  - {handle: ada, name: Ada L.}
  - {handle: bob, name: Bob K.}
  - {handle: cy, name: Cy D.}
  - {handle: dan, name: Dan E.}
  - {handle: eve, name: Eve F.}
tasks:
  - {id: sweep, title: Sweep the floor, project: commons, slots: 3, hours: 0.75}
"""


def api(config: Path, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    """A call to the API of the hub running with ``config``, as a script makes it."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        web_base(config) + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_one_member_cannot_rewrite_everyones_balance(tmp_path: Path, broker, db_url: str):
    """Issue 13, item 4, as the issue tried it, against `peershop run`: with a member
    token, claim every slot of a task posted at 0.75 h and report done with 1000 h each.
    That made the member +2400 and everyone else -600 at the close."""
    now = datetime.now(UTC)
    config, hub = hub_process(tmp_path, broker.port, db_url, ATTACK_SHOP)
    engine = make_engine(db_url)
    with session_factory(engine).begin() as s:
        s.add(Period(start=now - timedelta(days=1), end=now + timedelta(days=6)))
        for m in ("bob", "cy", "dan", "eve"):  # they came in this week
            sign_in(s, m, now - timedelta(hours=5), now - timedelta(hours=4))
    engine.dispose()
    made = peershop_command(
        config, "token", "create", "--role", "member", "--name", "ada", "--member", "ada"
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    hub.start(broker.port)
    try:
        answers = []
        for _ in range(3):
            status, _ = api(config, "POST", "/api/v1/tasks/sweep/claim", token)
            assert status == 201
            status, body = api(config, "POST", "/api/v1/tasks/sweep/done", token, {"hours": 1000})
            assert status == 201
            answers.append(body)
        status, board_now = api(config, "GET", "/api/v1/tasks", token)
    finally:
        assert hub.terminate() == 0
    closed = peershop_command(config, "period", "close")
    assert closed.returncode == 0, closed.stderr
    shown = peershop_command(config, "period", "show", "--json")
    last = next(p for p in json.loads(shown.stdout)["periods"] if p["closed_at"])
    members = last["projects"]["commons"]["members"]
    assert members["ada"]["credited"] == 2.25 and members["ada"]["balance"] == 1.8
    assert all(members[m]["balance"] == -0.45 for m in ("bob", "cy", "dan", "eve"))
    # the API says the hours wait for a confirmation, and Ada cannot give it herself
    for body in answers:
        assert body["effort"]["hours"] == 0.75
        assert body["claim"]["status"] == "pending" and body["claim"]["hours"] == 1000
        assert body["claim"]["credited_hours"] == 0.75
    assert status == 200
    assert [(c["member"], c["can_confirm"]) for c in board_now["pending"]] == [("ada", False)] * 3
