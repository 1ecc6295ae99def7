"""Logins the server can end: the session cookie names a row of ``web_sessions``.

Flask's session cookie is signed, not stored: once issued it logged its holder in
until it expired (31 days), after a logout and after a password change alike, and a
copy of it did the same.  So the cookie now carries a random token, and the login is
the row under the token's SHA-256.  Deleting the row ends the login for every copy of
the cookie:

- a logout deletes its own row; a password or PIN change, every row of that member;
- a kiosk login (badge and PIN) ends after ``http.kiosk_idle`` without a click, a key
  or a page opened by its user (a page's own refreshes and its live stream do not
  count), and when a badge is tapped on the kiosk's reader again;
- a password login unused for ``PASSWORD_IDLE`` ends too, so rows of browsers that
  never logged out do not pile up.

The rules (:func:`expired`, :func:`stale`) take ``now``; the queries take a session.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from hub.store.models import Member, WebSession

PASSWORD_IDLE = timedelta(days=30)
# A password login's last use is written at most this often (a kiosk's at every use).
TOUCH_EVERY = timedelta(minutes=5)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start(session: Session, member: Member, badge: str | None, now: datetime) -> str:
    """A new login of ``member`` (a kiosk login when ``badge`` is given); returns the
    token for the cookie, which is never stored.  Old rows of anyone are cleared."""
    session.execute(delete(WebSession).where(WebSession.seen_at < now - PASSWORD_IDLE))
    token = secrets.token_urlsafe(32)
    session.add(
        WebSession(id=_digest(token), member_id=member.id, badge=badge, created_at=now, seen_at=now)
    )
    session.flush()
    return token


def find(session: Session, token: str) -> WebSession | None:
    return session.get(WebSession, _digest(token))


def expired(row: WebSession, now: datetime, kiosk_idle: timedelta) -> bool:
    """Whether the login has ended by sitting unused."""
    return now - row.seen_at > (kiosk_idle if row.is_kiosk else PASSWORD_IDLE)


def stale(row: WebSession, now: datetime) -> bool:
    """Whether a use now should be written (a kiosk's always: its idle time is short)."""
    return row.is_kiosk or now - row.seen_at >= TOUCH_EVERY


def touch(session: Session, token: str, now: datetime) -> None:
    row = session.get(WebSession, _digest(token))
    if row is not None:
        row.seen_at = now


def end(session: Session, token: str) -> None:
    session.execute(delete(WebSession).where(WebSession.id == _digest(token)))


def end_all(session: Session, member_id: int) -> int:
    """End every login of a member; how many there were."""
    result = session.execute(delete(WebSession).where(WebSession.member_id == member_id))
    return result.rowcount  # type: ignore[attr-defined]
