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

Each open stream holds one of the web server's threads for as long as the page is open,
so :func:`web.serve.serve_in_thread` caps them (``http.streams``, :class:`StreamSlots`)
below its threads: a stream beyond the cap is refused at once with 503
``streams_full`` and ``Retry-After``, and the page polls instead (``stream.js``)
until a slot is free.  One client address holds at most ``http.streams_per_client``
of them (429 ``too_many_streams`` beyond), so one client cannot take every slot.  A
stream whose browser went away ends within a second (waitress sees the closed socket,
``channel_request_lookahead``) and gives its slot back; one whose phone dropped off the
Wi-Fi, within a minute (the kernel gives up on the socket, web/serve.py).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Any

from flask import Blueprint, Flask, Response, abort, current_app, request

from web.auth import can_see_names
from web.errors import api_error

log = logging.getLogger(__name__)

bp = Blueprint("stream", __name__)

# A page whose stream was refused refreshes its regions every POLL_S and asks for a
# stream again after RETRY_S (also the 503's Retry-After); the app's STREAM_POLL_S and
# STREAM_RETRY_S change them (the tests).
POLL_S = 10.0
RETRY_S = 30

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


class Refused(StrEnum):
    """Why a stream was refused: the error code its answer carries."""

    FULL = "streams_full"  # every slot is taken (503)
    CLIENT = "too_many_streams"  # this client address holds its share (429)


class StreamSlots:
    """At most ``limit`` streams open at once (``None``: no limit), and at most
    ``per_client`` of them for one client address, per app.

    >>> slots = StreamSlots(2, per_client=1)
    >>> slots.take("10.0.0.5"), slots.take("10.0.0.5"), slots.take("10.0.0.6")
    (None, <Refused.CLIENT: 'too_many_streams'>, None)
    >>> slots.take("10.0.0.7")
    <Refused.FULL: 'streams_full'>
    >>> slots.give_back("10.0.0.5"); slots.open
    1
    """

    def __init__(self, limit: int | None, per_client: int | None = None):
        self.limit = limit
        self.per_client = per_client
        self.open = 0
        self.refused = 0  # streams refused since start (a count, for the log and tests)
        self._by_client: dict[str, int] = {}
        self._lock = threading.Lock()
        self._warned_at = 0.0

    def take(self, client: str) -> Refused | None:
        """A slot for ``client`` (None), or why there is none."""
        warn = False
        with self._lock:
            held = self._by_client.get(client, 0)
            if self.limit is not None and self.open >= self.limit:
                refused = Refused.FULL
                warn = time.monotonic() - self._warned_at >= 60 or not self._warned_at
                if warn:
                    self._warned_at = time.monotonic()
            elif self.per_client is not None and held >= self.per_client:
                refused = Refused.CLIENT
            else:
                self.open += 1
                self._by_client[client] = held + 1
                return None
            self.refused += 1
        if warn:  # once a minute at most: every refused page asks again every RETRY_S
            log.warning(
                "live streams full (http.streams = %s): further pages poll instead; "
                "raise http.threads and http.streams for more live screens",
                self.limit,
            )
        return refused

    def give_back(self, client: str) -> None:
        with self._lock:
            self.open -= 1
            held = self._by_client.pop(client, 1) - 1
            if held:
                self._by_client[client] = held


def stream_slots(app: Flask) -> StreamSlots:
    """The app's slots; without :func:`web.serve.serve_in_thread` (the Flask test
    client, another WSGI server) only the cap per client holds."""
    return app.extensions.setdefault(
        "peershop.streams", StreamSlots(None, app.config["STREAMS_PER_CLIENT"])
    )


@bp.app_context_processor
def fallback_settings() -> dict[str, Any]:
    """What the pages' scripts do when their stream is refused (``data-poll``,
    ``data-retry`` in seconds)."""
    config = current_app.config
    return {
        "stream_poll_s": config.get("STREAM_POLL_S", POLL_S),
        "stream_retry_s": config.get("STREAM_RETRY_S", RETRY_S),
    }


def _refused(slots: StreamSlots, why: Refused) -> Response:
    retry = current_app.config.get("STREAM_RETRY_S", RETRY_S)
    if why is Refused.FULL:
        status, held = 503, f"all {slots.limit} live streams are open"
    else:
        status = 429
        held = (
            f"this address holds {slots.per_client} live streams already (http.streams_per_client)"
        )
    message = f"{held}; refresh by polling and ask again after {retry} s"
    response = api_error(status, why.value, message)
    response.headers["Retry-After"] = str(int(retry))
    return response


@bp.get("/api/v1/stream")
def stream() -> Response:
    state = current_app.extensions["peershop"]
    feed = state.feed
    if feed is None or feed.stopped:
        abort(503, description="no live hub in this process: the stream needs `peershop run`")
    slots = stream_slots(current_app)
    client = request.remote_addr or "?"  # behind a trusted proxy: the client it names
    refused = slots.take(client)
    if refused is not None:
        return _refused(slots, refused)
    try:
        return _open_stream(state, feed, lambda: slots.give_back(client))
    except BaseException:
        slots.give_back(client)
        raise


def _open_stream(state: Any, feed: Any, give_back: Callable[[], None]) -> Response:
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
    # waitress (channel_request_lookahead) notices a closed socket while the stream runs;
    # other servers do not say, and a write fails at the next heartbeat instead.
    gone: Callable[[], bool] = request.environ.get("waitress.client_disconnected", bool)
    q = feed.subscribe(topics)

    def generate() -> Iterator[str]:
        yield "retry: 2000\n\n"
        for data in initial:
            yield _frame("tool", data, names)
        last = time.monotonic()
        while True:
            try:
                item = q.get(timeout=min(heartbeat, 1.0))
            except queue.Empty:
                if feed.stopped or gone():
                    return
                if time.monotonic() - last >= heartbeat:
                    last = time.monotonic()
                    yield ": keepalive\n\n"  # also finds a browser that went away
                continue
            if item is None:
                return
            last = time.monotonic()
            yield _frame(item[0], item[1], names)

    def release() -> None:
        feed.unsubscribe(q)
        give_back()

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    response = Response(generate(), mimetype="text/event-stream", headers=headers)
    # The server closes the response however it ends (a HEAD, a client gone before the
    # first chunk, the feed stopping), which a generator's finally does not see if it
    # never started: the slot and the queue are given back there.
    response.call_on_close(release)
    return response
