"""What the floor and the API share: who is in (the hub's memory merged with the
records) and one line per event of the feed.  The reads are :mod:`hub.store.floor_queries`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hub.store.floor_queries import EventLine, member_names
from hub.store.shop_store import current_presence
from web.state import WebState


@dataclass(frozen=True)
class Present:
    handle: str
    name: str
    since: datetime


def presence(state: WebState, session: Any) -> list[Present]:
    """Who is signed in now, at any site: the rules' memory for the hub's own site, the
    records for the others (and for every site without a hub)."""
    if state.hub is not None:
        present = current_presence(session, except_site=state.hub.cfg.site.id)
        for member, since in state.hub.present().items():
            present[member] = min(since, present.get(member, since))
    else:
        present = current_presence(session)
    names = member_names(session, present)
    rows = [Present(h, names.get(h, h), since) for h, since in present.items()]
    return sorted(rows, key=lambda p: p.since)


def event_summary(ev: EventLine, *, coordinator: bool) -> str:
    """One line for the feed; a badge's uid only for coordinators."""
    data: dict[str, Any] = ev.data or {}
    if ev.type == "power":
        return f"{data.get('w', '?')} W"
    if ev.type == "running":
        return "on" if data.get("on") else "off"
    if ev.type in ("badge", "badge_removed"):
        return str(data.get("uid", "")) if coordinator else "card"
    if ev.type == "button":
        return str(data.get("name", ""))
    if ev.type == "consume":
        return f"{data.get('qty', '')} {data.get('unit', '')} {data.get('item', '')}".strip()
    if ev.type == "fault":
        return str(data.get("code", ""))
    return ""
