"""Changes made in Admin that a later shop-file load keeps: the overrides.

The shop file (hub/shopfile/) and Admin (web/admin.py, through hub/shopfile/tool_admin.py)
both write tools and training grants.  A coordinator who changes a tool's policy or renews a
training in Admin must not see it silently undone by the next ``peershop load``, so each
such change is recorded as an *override* next to the value it changed:

* a tool setting (``policy``, ``training``, ``power.idle_timeout``, ``hours``, … named as
  in the shop file) in ``tools.options["overrides"]``:
  ``{"policy": {"by": "cora", "at": "2026-11-28T10:00:00Z", "file": "tap"}}``; ``file`` is
  what the last load said, when it differed;
* a training grant (its expiry, which a revoke sets to the time of the revoke) as a
  ``shop_meta`` row ``override:grant:{grant id}`` whose value is the coordinator's
  member id.

A load keeps an overridden value and reports it (``! …``).  When the file comes to say
the same as the override, the override ends (``= …``) and the file rules that value
again.  A coordinator may also end an override in Admin; the next load then sets the
file's value.  No schema change: both live in columns that exist (docs/shop-file.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from hub.store.models import ShopMeta, Tool

TOOL_KEY = "overrides"
"""The key of ``tools.options`` that holds a tool's overrides."""
GRANT_PREFIX = "override:grant:"


def tool_overrides(tool: Tool) -> dict[str, dict[str, Any]]:
    """A copy of the tool's overrides, by setting name (``power.idle_timeout``)."""
    return {k: dict(v) for k, v in ((tool.options or {}).get(TOOL_KEY) or {}).items()}


def set_tool_overrides(tool: Tool, overrides: dict[str, dict[str, Any]]) -> None:
    """Store ``overrides`` in the tool's options (a new dict, so the change is flushed)."""
    options = {k: v for k, v in (tool.options or {}).items() if k != TOOL_KEY}
    if overrides:
        options[TOOL_KEY] = overrides
    if options != (tool.options or {}):
        tool.options = options


def stamp(by: str, at: datetime | None = None) -> dict[str, Any]:
    """An override's record: who made it in Admin, and when (UTC, ISO 8601)."""
    at = (at or datetime.now(UTC)).astimezone(UTC)
    return {"by": by, "at": at.isoformat(timespec="seconds").replace("+00:00", "Z")}


def _grant_key(grant_id: int) -> str:
    return f"{GRANT_PREFIX}{grant_id}"


def grant_overrides(session: Session) -> dict[int, int]:
    """Overridden grants: grant id -> member id of the coordinator who set them."""
    rows = session.execute(
        select(ShopMeta.key, ShopMeta.value).where(ShopMeta.key.startswith(GRANT_PREFIX))
    )
    return {int(key.removeprefix(GRANT_PREFIX)): value for key, value in rows}


def mark_grant(session: Session, grant_id: int, by_member_id: int) -> None:
    """Record that a coordinator set this grant in Admin."""
    row = session.get(ShopMeta, _grant_key(grant_id))
    if row is None:
        session.add(ShopMeta(key=_grant_key(grant_id), value=by_member_id))
    else:
        row.value = by_member_id


def unmark_grants(session: Session, grant_ids: Iterable[int]) -> int:
    """End these grants' overrides (one statement); returns how many had one."""
    keys = [_grant_key(i) for i in grant_ids]
    if not keys:
        return 0
    result = session.execute(delete(ShopMeta).where(ShopMeta.key.in_(keys)))
    return result.rowcount  # type: ignore[attr-defined,no-any-return]
