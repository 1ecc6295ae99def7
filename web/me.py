"""Me: my sessions, effort, trainings and badges."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, render_template
from flask_login import current_user
from sqlalchemy import select

from hub.models import Badge, EffortRecord, Member, Training, TrainingGrant, UsageSession
from web.auth import require_role

bp = Blueprint("me", __name__)


@bp.get("/me")
@require_role("member")
def index() -> Any:
    session = current_app.extensions["peershop"].db()
    handle = current_user.handle
    member = session.scalar(select(Member).where(Member.handle == handle))
    if member is None:  # an API token, not a person
        return render_template("error.html", status=404, message="No member here."), 404
    sessions = session.scalars(
        select(UsageSession)
        .where(UsageSession.member == handle)
        .order_by(UsageSession.start.desc())
        .limit(50)
    ).all()
    effort = session.scalars(
        select(EffortRecord)
        .where(EffortRecord.member == handle)
        .order_by(EffortRecord.start.desc())
        .limit(50)
    ).all()
    trainings = session.execute(
        select(
            Training.id,
            Training.name,
            TrainingGrant.granted_at,
            TrainingGrant.expires_at,
            Member.name,
        )
        .join(TrainingGrant, TrainingGrant.training_id == Training.id)
        .outerjoin(Member, Member.id == TrainingGrant.granted_by_id)
        .where(TrainingGrant.member_id == member.id)
        .order_by(Training.id)
    ).all()
    badges = session.scalars(select(Badge).where(Badge.member_id == member.id)).all()
    return render_template(
        "me.html",
        member=member,
        sessions=sessions,
        effort=effort,
        trainings=trainings,
        badges=badges,
    )
