"""Reads of the task board page (``/tasks``) and of the marks its live feed compares.

The board itself (order, weights, slots) is :func:`hub.ledger.taskboard.board`; these
are the rest of what the page shows.  Each function takes a :class:`Session` and
returns plain data.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import String, func, select, type_coerce
from sqlalchemy.orm import Session

from hub.store.models import (
    ClaimReview,
    EffortRecord,
    Period,
    Project,
    Task,
    TaskClaim,
    TaskState,
    TaskWant,
    TaskWeightHistory,
)


def recent_closed_periods(session: Session, count: int) -> tuple[tuple[int, datetime], ...]:
    """The ``count`` latest closed periods as ``(id, closed_at)``, newest first: the
    tasks page keeps its weight charts until this changes."""
    rows = session.execute(
        select(Period.id, Period.closed_at)
        .where(Period.closed_at.is_not(None))
        .order_by(Period.start.desc())
        .limit(count)
    )
    return tuple((period_id, closed_at) for period_id, closed_at in rows)


def weights_in(session: Session, period_ids: Iterable[int]) -> dict[str, tuple[float, ...]]:
    """Each task's weight in the given periods, oldest period first: the tasks page's
    weight charts.  Floats: they only draw a chart."""
    out: dict[str, list[float]] = defaultdict(list)
    rows = session.execute(
        select(TaskWeightHistory.task_id, type_coerce(TaskWeightHistory.weight, String))
        .where(TaskWeightHistory.period_id.in_(list(period_ids)))
        .order_by(TaskWeightHistory.period_id)
    )
    for task_id, weight in rows:
        out[task_id].append(float(weight))
    return {task_id: tuple(weights) for task_id, weights in out.items()}


@dataclass(frozen=True)
class ProposedTask:
    """A task a member proposed, waiting for a coordinator to open or retire it."""

    id: str
    title: str
    project_id: str | None
    hours: Decimal
    slots: int


def proposed_tasks(session: Session) -> list[ProposedTask]:
    """The tasks page's "Proposed" list, by id."""
    rows = session.execute(
        select(Task.id, Task.title, Task.project_id, Task.hours, Task.slots)
        .join(TaskState, TaskState.task_id == Task.id)
        .where(TaskState.status == "proposed")
        .order_by(Task.id)
    )
    return [ProposedTask(*row) for row in rows]


def wanted_by(session: Session, handle: str) -> set[str]:
    """The tasks a member has marked as wanted: their hint buttons on the board."""
    return set(session.scalars(select(TaskWant.task_id).where(TaskWant.member == handle)))


def project_choices(session: Session) -> list[tuple[str, str]]:
    """Every project as ``(id, name)``, by id: the propose form's project menu."""
    rows = session.execute(select(Project.id, Project.name).order_by(Project.id))
    return [(project_id, name) for project_id, name in rows]


def task_exists(session: Session, task_id: str) -> bool:
    """Whether a task of that id is stored: a board action on any other is a 404."""
    return session.get(Task, task_id) is not None


def change_marks(session: Session) -> dict[str, tuple[Any, ...]]:
    """Marks that change whenever the task board (``tasks``) or the periods (``period``)
    change, whoever changed them: this process, a task station through the hub, a
    ``peershop`` command or another hub on the same database.  The web view's live feed
    compares them while a tasks or period page is open.

    A claim or a given-back slot changes the claims' count or last id, a done task or a
    station's effort the last effort id, a confirmed or rejected big claim the reviews'
    count or last id, a hint the wants, a proposal, an opened or
    retired task, a pin or a close's new weights the tasks' and states' rows (a few
    hundred short rows, hashed), and a close the periods' closed count.  Every query is
    an aggregate or reads a small table, so a check costs about a millisecond.
    """
    claims = session.execute(
        select(func.count(), func.max(TaskClaim.id), func.count(TaskClaim.done_at))
    ).one()
    wants = session.execute(select(func.count(), func.max(TaskWant.id))).one()
    reviews = session.execute(select(func.count(), func.max(ClaimReview.id))).one()
    effort = session.scalar(select(func.max(EffortRecord.id)))
    tasks = session.execute(
        select(Task.id, Task.title, Task.slots, type_coerce(Task.weight, String)).order_by(Task.id)
    ).all()
    states = session.execute(
        select(TaskState.task_id, TaskState.status, TaskState.pinned).order_by(TaskState.task_id)
    ).all()
    periods = session.execute(
        select(func.count(), func.max(Period.id), func.count(Period.closed_at))
    ).one()
    return {
        "tasks": (*claims, *wants, *reviews, effort, hash(tuple(tasks)), hash(tuple(states))),
        "period": tuple(periods),
    }
