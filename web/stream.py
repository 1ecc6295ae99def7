"""``GET /api/v1/stream``: server-sent events of tool states, sessions and batches.

Events: ``tool`` (``{"tool","state","member","handle","since","w"}`` like
``peershop/tool/{tool}/state``), ``session`` (``{"tool","event":"start|end","member"}``)
``batch`` (new events, statuses and dead letters were stored), ``tasks`` (the task
board changed) and ``period`` (a period was stored or closed: balances changed), both
``{"at"}``.  On connect every tool's current state is sent, so a screen that reconnects
is right again at once.  Member names and handles are sent only to logged-in clients and
configured kiosks.

``?topics=tasks,period`` (any of the event names) sends only those events and no
initial tool states: what the task board and the period page listen to.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, abort, current_app, request

from web.auth import can_see_names

bp = Blueprint("stream", __name__)

PERSONAL = ("member", "handle")
TOPICS = frozenset({"tool", "session", "batch", "tasks", "period"})


def _frame(event: str, data: dict[str, Any], names: bool) -> str:
    if not names:
        data = {k: (None if k in PERSONAL else v) for k, v in data.items()}
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _topics(text: str | None) -> frozenset[str] | None:
    if text is None:
        return None
    topics = frozenset(t for t in text.split(",") if t)
    unknown = topics - TOPICS
    if not topics or unknown:
        abort(400, description=f"topics are some of {', '.join(sorted(TOPICS))}")
    return topics


@bp.get("/api/v1/stream")
def stream() -> Response:
    state = current_app.extensions["peershop"]
    feed = state.feed
    if feed is None or feed.stopped:
        abort(503, description="no live hub in this process: the stream needs `peershop run`")
    names = can_see_names()
    heartbeat = float(current_app.config["STREAM_HEARTBEAT_S"])
    topics = _topics(request.args.get("topics"))
    initial = []
    with state.sm() as session:
        for view in state.tool_views(session) if topics is None or "tool" in topics else ():
            data = view.public(True)
            initial.append(
                {
                    "tool": view.id,
                    "state": data["state"],
                    "member": data["member"],
                    "handle": view.handle,
                    "since": data["since"],
                    "w": data["w"],
                }
            )
    q = feed.subscribe(topics)

    def generate() -> Iterator[str]:
        try:
            yield "retry: 2000\n\n"
            for data in initial:
                yield _frame("tool", data, names)
            last = time.monotonic()
            while True:
                try:
                    item = q.get(timeout=min(heartbeat, 1.0))
                except queue.Empty:
                    if feed.stopped:
                        return
                    if time.monotonic() - last >= heartbeat:
                        last = time.monotonic()
                        yield ": keepalive\n\n"  # also finds a browser that went away
                    continue
                if item is None:
                    return
                last = time.monotonic()
                yield _frame(item[0], item[1], names)
        finally:
            feed.unsubscribe(q)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return Response(generate(), mimetype="text/event-stream", headers=headers)
