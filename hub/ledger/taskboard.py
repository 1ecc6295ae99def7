"""The task board: what the shop needs done, in the order people care about it.

Query and command functions the web pages and the API call; each takes a ``Session``
(the caller owns the transaction) and ``now``.  Nobody assigns work: members claim a
slot of a task, mark it done, hint that they want a task done, or propose a new one,
which waits for a coordinator (``status`` proposed, then open or retired).

**Order** (:func:`board`): open tasks with slots left come first, by

    score = weight * (1 + wants) * (1 + overdue_days / 7)

where ``wants`` is the number of members who marked "I want this done" and
``overdue_days`` is how long the task has gone undone beyond one period: the time since
it was last done (or posted, when it never was) minus the period's length, never below
0.  So a heavy task, a wanted task and a neglected task all rise; a task whose slots are
all taken this period goes to the end.

**Weight**: a claim keeps the weight posted when it was made; :func:`done` credits the
effort at that weight even if the period close has changed the task's weight since.  In
a project whose rule (a) runs in ``clock`` mode (:class:`~hub.store.models.ProjectRules`
``weight_mode``), the posted weight of a task with slots still untaken rises day by day
inside the period (:func:`hub.peerconomy.economy.weight_at`); :func:`board` shows, and
:func:`claim` records, that weight at ``now``.  :func:`slot_takes` says which slots are
taken; the live hub's task stations read the same (``hub.store.shop_store.load_shop``).

**Big claims** (docs/sharing-models.md, (j)): a done whose hours exceed the task's posted hours by
more than half is credited at the posted hours and waits (:data:`ClaimStatus.PENDING`)
until a coordinator, or another member who was there, confirms it (:func:`confirm`);
a coordinator may reject it instead (:func:`reject`), and it stays at the posted hours.
The confirmation that completes it adds an effort record of the rest of the hours at the
claim's weight, dated then, so it counts in the period that is open when it comes: the
same period as the done when confirmed before the close, else the next one, as a
correction (a closed period never changes).  "Was there" is read from the sign-ins
(``presence_changes``): the confirmer and the claimant were signed in at the same site
at the same time, some time between the claim and the done (:func:`was_there`).

A member may take every slot of a task, one at a time (claim, done, claim again): one
person may sweep the floor every day of the week.  What that credits is bounded all the
same: each done counts at most the posted hours until someone else confirms more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from hub.config import load_config
from hub.errors import NotAllowedError, TaskBoardError
from hub.ledger.periods import open_period
from hub.peerconomy import economy as pc
from hub.rules.presence import met, stays
from hub.rules.records import EffortSource
from hub.store.models import (
    ClaimReview,
    EffortRecord,
    Member,
    PresenceChange,
    Project,
    ProjectRules,
    Standing,
    Task,
    TaskClaim,
    TaskState,
    TaskWant,
    Verdict,
)
from hub.store.queries import slot_takes, weight_rules
from hub.store.shop_store import bump_shop_version

if TYPE_CHECKING:
    from hub.config import Config

STATUSES = ("proposed", "open", "retired")


class ClaimStatus(StrEnum):
    """Where a claim stands."""

    CLAIMED = "claimed"  # a slot taken, not done yet
    CREDITED = "credited"  # done, credited as reported
    PENDING = "pending"  # a big claim: credited at the posted hours, waiting
    CONFIRMED = "confirmed"  # a big claim confirmed: credited as reported
    REJECTED = "rejected"  # a big claim a coordinator rejected: the posted hours for good


@dataclass(frozen=True)
class ClaimView:
    """A claim as the board and the API show it."""

    id: int
    task: str
    title: str
    member: str
    weight: Decimal
    claimed_at: datetime
    done_at: datetime | None
    hours: Decimal | None  # reported when marked done
    credited_hours: Decimal | None  # what counts now: the posted hours while pending
    status: ClaimStatus
    confirmed_by: tuple[str, ...]
    rejected_by: str | None
    confirmations_needed: int


@dataclass(frozen=True)
class BoardEntry:
    """One task as the board shows it."""

    task: str
    title: str
    project: str | None
    weight: Decimal
    hours: Decimal
    slots: int
    slots_left: int
    wants: int
    overdue_days: Decimal
    score: Decimal
    pinned: bool
    claimed_by: tuple[str, ...]  # members holding a slot not yet done
    start_weight: Decimal  # the weight posted at the period's start (``weight`` in close mode)
    clock: bool = False  # the project's weights rise inside the period (clock mode)


def _default_config() -> Config:
    return load_config(env={}, search=())


def _task(session: Session, task_id: str) -> tuple[Task, TaskState | None]:
    task = session.get(Task, task_id)
    if task is None:
        raise TaskBoardError(f"no task {task_id!r}")
    return task, session.get(TaskState, task_id)


def _status(state: TaskState | None) -> str:
    return "open" if state is None else state.status


def _member(session: Session, handle: str) -> None:
    if session.execute(select(Member.id).where(Member.handle == handle)).first() is None:
        raise TaskBoardError(f"no member {handle!r}")


def _claims_in(session: Session, period_id: int) -> dict[str, list[TaskClaim]]:
    out: dict[str, list[TaskClaim]] = {}
    for c in session.execute(
        select(TaskClaim).where(TaskClaim.period_id == period_id).order_by(TaskClaim.id)
    ).scalars():
        out.setdefault(c.task_id, []).append(c)
    return out


def _is_clock(rules: dict[str, ProjectRules], task: Task) -> bool:
    rule = rules.get(task.project_id or "")
    return rule is not None and rule.weight_mode == pc.WeightMode.CLOCK


def _weight_now(
    task: Task,
    rules: dict[str, ProjectRules],
    pinned: bool,
    period_start: datetime,
    now: datetime,
    taken: int,
) -> Decimal:
    """The weight a task shows at ``now``: its posted weight, risen in clock mode."""
    rule = rules.get(task.project_id or "")
    if rule is None or rule.weight_mode != pc.WeightMode.CLOCK:
        return task.weight
    return pc.weight_at(
        task.weight,
        period_start,
        max(now, period_start),
        slots=max(task.slots, 1),
        taken=taken,
        k=rule.gain,
        lo=rule.weight_min,
        hi=rule.weight_max,
        pinned=pinned,
    )


def board(
    session: Session, now: datetime, cfg: Config | None = None, *, status: str = "open"
) -> list[BoardEntry]:
    """The tasks with ``status`` (open by default), in the order described above."""
    cfg = cfg or _default_config()
    period = open_period(session, cfg, now)
    length: timedelta = period.end - period.start
    states = {s.task_id: s for s in session.execute(select(TaskState)).scalars()}
    claims = _claims_in(session, period.id)
    rules = weight_rules(session)
    takes = slot_takes(session, period.start, period.end) if rules else {}
    wants = dict(
        session.execute(select(TaskWant.task_id, func.count()).group_by(TaskWant.task_id)).all()
    )
    # Each task's last effort, one index lookup per task (effort_records(task_id, start)):
    # a GROUP BY over all effort records read the whole index on every page view.
    last_effort = (
        select(func.max(EffortRecord.start))
        .where(EffortRecord.task_id == Task.id)
        .scalar_subquery()
    )
    last_done = dict(session.execute(select(Task.id, last_effort)).all())
    entries = []
    for task in session.execute(select(Task)).scalars():
        state = states.get(task.id)
        if _status(state) != status:
            continue
        since = last_done.get(task.id) or (state.posted_at if state else None)
        overdue = Decimal(0)
        if since is not None:
            late = (now - since) - length
            if late > timedelta(0):
                overdue = Decimal(int(late.total_seconds())) / Decimal(86400)
        n_wants = int(wants.get(task.id, 0))
        pinned = bool(state and state.pinned)
        n_taken = sum(1 for t in takes.get(task.id, ()) if t <= now)
        weight = _weight_now(task, rules, pinned, period.start, now, n_taken)
        score = weight * (1 + n_wants) * (1 + overdue / 7)
        taken = claims.get(task.id, [])
        entries.append(
            BoardEntry(
                task=task.id,
                title=task.title,
                project=task.project_id,
                weight=weight,
                hours=task.hours,
                slots=task.slots,
                slots_left=max(task.slots - len(taken), 0),
                wants=n_wants,
                overdue_days=overdue.quantize(Decimal("0.01")),
                score=score.quantize(Decimal("0.000001")),
                pinned=pinned,
                claimed_by=tuple(c.member for c in taken if c.done_at is None),
                start_weight=task.weight,
                clock=_is_clock(rules, task),
            )
        )
    entries.sort(key=lambda e: (e.slots_left == 0, -e.score, e.task))
    return entries


def claim(
    session: Session, member: str, task_id: str, now: datetime, cfg: Config | None = None
) -> TaskClaim:
    """Take a slot of an open task in the current period, at the weight posted now
    (in clock mode, risen by the days its slots have waited; see :func:`board`)."""
    _member(session, member)
    task, state = _task(session, task_id)
    if _status(state) != "open":
        raise TaskBoardError(f"task {task_id} is {_status(state)}, not open")
    period = open_period(session, cfg or _default_config(), now)
    taken = session.execute(
        select(TaskClaim).where(TaskClaim.task_id == task_id, TaskClaim.period_id == period.id)
    ).scalars()
    taken = list(taken)
    if any(c.member == member and c.done_at is None for c in taken):
        raise TaskBoardError(f"{member} holds a slot of {task_id} already")
    if len(taken) >= task.slots:
        raise TaskBoardError(f"no slot of {task_id} is left this period")
    weight = task.weight
    rules = weight_rules(session)
    if _is_clock(rules, task):
        n = sum(
            1
            for t in slot_takes(session, period.start, period.end, task_id=task_id).get(task_id, [])
            if t <= now
        )
        weight = _weight_now(task, rules, bool(state and state.pinned), period.start, now, n)
        # A running hub's task stations count this slot as taken from their next reload.
        bump_shop_version(session)
    c = TaskClaim(
        task_id=task_id, member=member, period_id=period.id, claimed_at=now, weight=weight
    )
    session.add(c)
    session.flush()
    return c


def done(
    session: Session,
    member: str,
    task_id: str,
    now: datetime,
    hours: Any = None,
    cfg: Config | None = None,
) -> EffortRecord:
    """Mark a claimed task done: an effort record (source ``board``) dated ``now``, of
    ``hours`` (default the task's posted hours) at the weight posted when it was claimed."""
    task, _ = _task(session, task_id)
    c = session.execute(
        select(TaskClaim)
        .where(
            TaskClaim.task_id == task_id,
            TaskClaim.member == member,
            TaskClaim.done_at.is_(None),
        )
        .order_by(TaskClaim.id.desc())
        .limit(1)
    ).scalar()
    if c is None:
        raise TaskBoardError(f"{member} has not claimed {task_id}; claim it first")
    h = task.hours if hours is None else pc.to_decimal(hours, "hours")
    if h <= 0:
        raise TaskBoardError("hours must be positive")
    open_period(session, cfg or _default_config(), now)  # the effort lands in the open one
    # A big claim counts the posted hours until it is confirmed (module docstring).
    needed = pc.confirmations_needed(h, task.hours)
    record = EffortRecord(
        key=f"board:{c.id}",
        member=member,
        task_id=task_id,
        project_id=task.project_id,
        start=now,
        end=now,
        hours=task.hours if needed else h,
        weight=c.weight,
        source=EffortSource.BOARD,
    )
    session.add(record)
    c.done_at = now
    c.effort_key = record.key
    c.hours = h
    c.confirmations_needed = needed
    session.flush()
    return record


# --- big claims --------------------------------------------------------------------------


def _views(session: Session, claims: list[TaskClaim]) -> list[ClaimView]:
    """Claims with their reviews and credited hours, in the order given."""
    if not claims:
        return []  # the board asks on every view; most of the time nothing waits
    ids = [c.id for c in claims]
    reviews: dict[int, list[ClaimReview]] = {}
    for r in session.scalars(
        select(ClaimReview).where(ClaimReview.claim_id.in_(ids)).order_by(ClaimReview.id)
    ):
        reviews.setdefault(r.claim_id, []).append(r)
    keys = [c.effort_key for c in claims if c.effort_key]
    credited = dict(
        session.execute(
            select(EffortRecord.key, EffortRecord.hours).where(EffortRecord.key.in_(keys))
        ).all()
    )
    titles = dict(
        session.execute(
            select(Task.id, Task.title).where(Task.id.in_({c.task_id for c in claims}))
        ).all()
    )
    out = []
    for c in claims:
        mine = reviews.get(c.id, [])
        confirmed = tuple(r.member for r in mine if r.verdict == Verdict.CONFIRM)
        rejected = next((r.member for r in mine if r.verdict == Verdict.REJECT), None)
        hours = c.hours
        if c.done_at is None:
            status, counted = ClaimStatus.CLAIMED, None
        elif c.confirmations_needed == 0:
            status, counted = ClaimStatus.CREDITED, credited.get(c.effort_key or "", hours)
        elif rejected is not None:
            status, counted = ClaimStatus.REJECTED, credited.get(c.effort_key or "")
        elif len(confirmed) >= c.confirmations_needed:
            status, counted = ClaimStatus.CONFIRMED, hours
        else:
            status, counted = ClaimStatus.PENDING, credited.get(c.effort_key or "")
        out.append(
            ClaimView(
                id=c.id,
                task=c.task_id,
                title=titles.get(c.task_id, c.task_id),
                member=c.member,
                weight=c.weight,
                claimed_at=c.claimed_at,
                done_at=c.done_at,
                hours=hours,
                credited_hours=counted,
                status=status,
                confirmed_by=confirmed,
                rejected_by=rejected,
                confirmations_needed=c.confirmations_needed,
            )
        )
    return out


def claim_view(session: Session, claim_id: int) -> ClaimView:
    """One claim as the board shows it; :class:`TaskBoardError` if there is none."""
    c = session.get(TaskClaim, claim_id)
    if c is None:
        raise TaskBoardError(f"no claim {claim_id}")
    return _views(session, [c])[0]


def claim_of(session: Session, record: EffortRecord) -> ClaimView:
    """The claim a done's effort record was made for (what :func:`done` returned)."""
    c = session.scalar(select(TaskClaim).where(TaskClaim.effort_key == record.key))
    if c is None:
        raise TaskBoardError(f"effort {record.key} was not made by a claim on the board")
    return _views(session, [c])[0]


def pending_claims(session: Session) -> list[ClaimView]:
    """Every big claim still waiting for a confirmation, oldest done first."""
    confirms = (
        select(func.count())
        .where(ClaimReview.claim_id == TaskClaim.id, ClaimReview.verdict == Verdict.CONFIRM)
        .scalar_subquery()
    )
    rejected = (
        select(ClaimReview.id)
        .where(ClaimReview.claim_id == TaskClaim.id, ClaimReview.verdict == Verdict.REJECT)
        .exists()
    )
    claims = session.scalars(
        select(TaskClaim)
        .where(
            TaskClaim.confirmations_needed > 0,
            TaskClaim.done_at.is_not(None),
            ~rejected,
            confirms < TaskClaim.confirmations_needed,
        )
        .order_by(TaskClaim.done_at, TaskClaim.id)
    ).all()
    return _views(session, list(claims))


def was_there(session: Session, member: str, claim: TaskClaim | ClaimView) -> bool:
    """Whether ``member`` was signed in at the same site as the claimant, at the same
    time, some time between the claim and the done: the records' own witness of the
    work.  A claimant who never signed in then has no witness but a coordinator."""
    start = claim.claimed_at
    end = claim.done_at or start
    pc_ = PresenceChange
    who = (member, claim.member)
    # each one's last change before the claim (were they in already?), and those during
    before = (
        select(func.max(pc_.id))
        .where(pc_.member.in_(who), pc_.at < start)
        .group_by(pc_.member, pc_.site)
    ).scalar_subquery()
    rows = session.execute(
        select(pc_.member, pc_.site, pc_.at, pc_.state)
        .where(
            pc_.member.in_(who),
            or_(pc_.id.in_(before), and_(pc_.at >= start, pc_.at <= end)),
        )
        .order_by(pc_.id)
    ).all()
    changes: dict[tuple[str, str], list[tuple[datetime, str]]] = {}
    for m, site, at, state in rows:
        changes.setdefault((m, site), []).append((at, state))
    return any(
        met(stays(mine), stays(changes.get((claim.member, site), [])), start, end)
        for (m, site), mine in changes.items()
        if m == member
    )


def may_confirm(session: Session, claim: ClaimView, member: str | None, coordinator: bool) -> bool:
    """Whether ``member`` may confirm ``claim`` now: it is pending, not their own, and
    they are a coordinator or were there (:func:`was_there`)."""
    if member is None or claim.status != ClaimStatus.PENDING or member == claim.member:
        return False
    if member in claim.confirmed_by:
        return False
    return coordinator or was_there(session, member, claim)


def _pending(session: Session, claim_id: int, member: str) -> tuple[TaskClaim, ClaimView]:
    _member(session, member)
    c = session.get(TaskClaim, claim_id)
    if c is None:
        raise TaskBoardError(f"no claim {claim_id}")
    view = _views(session, [c])[0]
    if view.status != ClaimStatus.PENDING:
        raise TaskBoardError(f"claim {claim_id} is not waiting for a confirmation ({view.status})")
    if member == c.member:
        raise NotAllowedError("nobody confirms or rejects their own claim")
    if member in view.confirmed_by:
        raise TaskBoardError(f"{member} has confirmed claim {claim_id} already")
    return c, view


def confirm(
    session: Session,
    claim_id: int,
    member: str,
    now: datetime,
    cfg: Config | None = None,
    *,
    coordinator: bool = False,
) -> ClaimView:
    """``member`` confirms a pending big claim: as a coordinator, or as a member who was
    there (:func:`was_there`).  The confirmation that completes it credits the rest of
    the reported hours, at the claim's weight, in the period open ``now``."""
    c, view = _pending(session, claim_id, member)
    standing = Standing.COORDINATOR if coordinator else Standing.PRESENT
    if not coordinator and not was_there(session, member, c):
        raise NotAllowedError(
            f"only a coordinator, or a member signed in with {c.member} between the claim "
            f"and the done, confirms claim {claim_id}"
        )
    review = ClaimReview(
        claim_id=c.id, member=member, verdict=Verdict.CONFIRM, standing=standing, at=now
    )
    session.add(review)
    if len(view.confirmed_by) + 1 >= c.confirmations_needed:
        task = session.get(Task, c.task_id)
        period = open_period(session, cfg or _default_config(), now)
        if period.closed_at is not None:
            raise TaskBoardError(f"period {period.id} is closed")
        rest = (c.hours or Decimal(0)) - (view.credited_hours or Decimal(0))
        if rest > 0:
            session.add(
                EffortRecord(
                    key=f"board:{c.id}:confirmed",
                    member=c.member,
                    task_id=c.task_id,
                    project_id=task.project_id if task else None,
                    start=now,
                    end=now,
                    hours=rest,
                    weight=c.weight,
                    source=EffortSource.BOARD,  # counted by its claim, like the done's own record
                )
            )
    session.flush()
    return _views(session, [c])[0]


def reject(session: Session, claim_id: int, member: str, now: datetime) -> ClaimView:
    """A coordinator (the caller checks the role) rejects a pending big claim: it stays
    credited at the posted hours, and nobody can confirm it any more."""
    c, _ = _pending(session, claim_id, member)
    session.add(
        ClaimReview(
            claim_id=c.id,
            member=member,
            verdict=Verdict.REJECT,
            standing=Standing.COORDINATOR,
            at=now,
        )
    )
    session.flush()
    return _views(session, [c])[0]


def unclaim(session: Session, member: str, task_id: str) -> None:
    """Give a claimed slot back before doing it (the claim no longer counts as taken)."""
    c = session.execute(
        select(TaskClaim).where(
            TaskClaim.task_id == task_id,
            TaskClaim.member == member,
            TaskClaim.done_at.is_(None),
        )
    ).scalar()
    if c is None:
        raise TaskBoardError(f"{member} holds no slot of {task_id}")
    task = session.get(Task, task_id)
    if task is not None and _is_clock(weight_rules(session), task):
        bump_shop_version(session)  # the slot is free again for the task stations' weights
    session.delete(c)
    session.flush()


def want(session: Session, member: str, task_id: str, now: datetime) -> bool:
    """Mark "I want this done"; False when the member had marked it already."""
    _member(session, member)
    _task(session, task_id)
    found = session.execute(
        select(TaskWant.id).where(TaskWant.task_id == task_id, TaskWant.member == member)
    ).first()
    if found is not None:
        return False
    session.add(TaskWant(task_id=task_id, member=member, at=now))
    session.flush()
    return True


def unwant(session: Session, member: str, task_id: str) -> None:
    """Take back a hint."""
    w = session.execute(
        select(TaskWant).where(TaskWant.task_id == task_id, TaskWant.member == member)
    ).scalar()
    if w is not None:
        session.delete(w)
        session.flush()


def _slug(title: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return (s or "task")[:56]


def propose(
    session: Session,
    member: str,
    title: str,
    project: str | None,
    hours: Any,
    now: datetime,
    *,
    slots: int = 1,
) -> Task:
    """A member proposes a task; it waits (``proposed``) until a coordinator opens it."""
    _member(session, member)
    if not title.strip():
        raise TaskBoardError("a task needs a title")
    if project is not None and session.get(Project, project) is None:
        raise TaskBoardError(f"no project {project!r}")
    h = pc.to_decimal(hours, "hours")
    if h <= 0:
        raise TaskBoardError("hours must be positive")
    if slots < 1:
        raise TaskBoardError("slots must be at least 1")
    base = _slug(title)
    task_id, n = base, 1
    while session.get(Task, task_id) is not None:
        n += 1
        task_id = f"{base}-{n}"
    task = Task(
        id=task_id,
        title=title.strip(),
        project_id=project,
        slots=slots,
        hours=h,
        weight=pc.START_WEIGHT,
    )
    session.add(task)
    session.flush()
    session.add(TaskState(task_id=task_id, status="proposed", posted_at=None, proposed_by=member))
    session.flush()
    return task


def set_status(session: Session, task_id: str, status: str, now: datetime) -> None:
    """A coordinator opens a proposed task (or retires one, or reopens it)."""
    if status not in STATUSES:
        raise TaskBoardError(f"status must be one of {', '.join(STATUSES)}")
    _, state = _task(session, task_id)
    if state is None:
        state = TaskState(task_id=task_id, status=status, pinned=False)
        session.add(state)
    if status == "open" and (state.status != "open" or state.posted_at is None):
        state.posted_at = now
    state.status = status
    session.flush()


def pin(session: Session, task_id: str, weight: Any | None) -> None:
    """A coordinator pins a task's weight (it stops moving at close), or unpins it (None)."""
    task, state = _task(session, task_id)
    if state is None:
        state = TaskState(task_id=task_id, status="open", pinned=False)
        session.add(state)
    if weight is None:
        state.pinned = False
    else:
        rules = session.get(ProjectRules, task.project_id) if task.project_id else None
        lo, hi = (rules.weight_min, rules.weight_max) if rules else (pc.LO, pc.HI)
        try:
            task.weight = pc.check_weight(weight, lo, hi)
        except ValueError as exc:
            raise TaskBoardError(str(exc)) from None
        state.pinned = True
    session.flush()


def set_rules(
    session: Session,
    project: str,
    gain: Any,
    weight_min: Any,
    weight_max: Any,
    weight_mode: str | None = None,
) -> None:
    """A coordinator sets rule (a)'s gain, weight bounds and (if given) weight mode
    (``close`` or ``clock``) of a project."""
    if weight_mode is not None and weight_mode not in pc.WEIGHT_MODES:
        raise TaskBoardError(f"weight_mode must be one of {', '.join(pc.WEIGHT_MODES)}")
    if session.get(Project, project) is None:
        raise TaskBoardError(f"no project {project!r}")
    k = pc.to_decimal(gain, "gain")
    lo, hi = pc.to_decimal(weight_min, "weight_min"), pc.to_decimal(weight_max, "weight_max")
    if not (0 < k < 1) or not (0 < lo <= hi):
        raise TaskBoardError("gain must be between 0 and 1 and 0 < weight_min <= weight_max")
    rules = session.get(ProjectRules, project)
    if rules is None:
        rules = ProjectRules(project_id=project, weight_mode=pc.WeightMode.CLOSE)
        session.add(rules)
    rules.gain, rules.weight_min, rules.weight_max = k, lo, hi
    if weight_mode is not None and weight_mode != rules.weight_mode:
        rules.weight_mode = weight_mode
        bump_shop_version(session)  # a running hub's task stations post the new weights
    session.flush()
