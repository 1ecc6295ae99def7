"""Serve the app with waitress in a background thread (``peershop run``)."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ErrorTask
from waitress.utilities import RequestEntityTooLarge

from hub.config import PAGE_THREADS, SCHEMA, default_streams
from web.stream import StreamSlots

log = logging.getLogger(__name__)

THREADS = SCHEMA["http"]["threads"].default

# A phone that drops off the Wi-Fi closes nothing, so its stream held a slot until the
# kernel gave up retransmitting the heartbeats to it: about 15 minutes on Linux's
# defaults.  On every connection the kernel now drops a peer that leaves sent data
# unacknowledged for DEAD_PEER_S (TCP_USER_TIMEOUT; a stream sends a heartbeat every
# 15 s) or, idle, answers no keepalive probe (one after DEAD_PEER_S / 2 of silence, then
# every 5 s, three in all).  waitress sees the error and the stream gives its slot back:
# within 15 + 30 s of the phone's last word.
DEAD_PEER_S = 30


def _dead_peer_options(dead_peer_s: int) -> list[tuple[int, int, int]]:
    tcp = socket.IPPROTO_TCP
    wanted = [
        (socket.SOL_SOCKET, "SO_KEEPALIVE", 1),
        (tcp, "TCP_KEEPIDLE", max(1, dead_peer_s // 2)),
        (tcp, "TCP_KEEPINTVL", 5),
        (tcp, "TCP_KEEPCNT", 3),
        (tcp, "TCP_USER_TIMEOUT", dead_peer_s * 1000),
    ]
    # TCP_KEEPIDLE and TCP_USER_TIMEOUT are Linux's (the Pi's); elsewhere what there is
    return [(level, getattr(socket, name), v) for level, name, v in wanted if hasattr(socket, name)]


class JsonErrorTask(ErrorTask):
    """waitress's own refusals (a body over the limit on its headers, a malformed
    request) in the API's error format, ``{"error":{"code","message"}}``."""

    def execute(self) -> None:
        error = self.request.error
        message = error.body
        if isinstance(error, RequestEntityTooLarge):
            from web import body_too_large  # here: web imports this module

            message = body_too_large(self.channel.server.adj.max_request_body_size - 1)
        code = error.reason.lower().replace(" ", "_")
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class Channel(HTTPChannel):
    error_task_class = JsonErrorTask


def serve_in_thread(
    app: Flask,
    listen: tuple[str, int],
    *,
    threads: int = THREADS,
    streams: int | None = None,
) -> Callable[[], None]:
    """Start waitress on ``listen`` (host, port) with ``threads``; returns ``stop()``.

    Each open live page (floor, task board, period) holds one thread for its event
    stream, so at most ``streams`` (``http.streams``; default two thirds of the threads)
    are open at once, at most the app's ``STREAMS_PER_CLIENT`` from one client address,
    and at least ``PAGE_THREADS`` threads stay for pages and the API.  A stream beyond
    the cap gets 503 (429 beyond the client's) and its page polls (web/stream.py).
    A request body over the app's ``MAX_CONTENT_LENGTH`` gets 413 on its headers,
    before waitress reads it.
    ``stop()`` ends the streams first, then closes the listening socket.
    """
    streams = default_streams(threads) if streams is None else streams
    if not 0 <= streams <= threads - PAGE_THREADS:
        raise ValueError(
            f"streams must leave {PAGE_THREADS} of the {threads} threads for pages, got {streams}"
        )
    host, port = listen
    app.extensions["peershop.streams"] = StreamSlots(streams, app.config["STREAMS_PER_CLIENT"])
    server = create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        ident="peershop",
        # keep reading a connection while its request runs, so a stream whose browser
        # closed the socket sees it (waitress.client_disconnected) and frees its thread
        channel_request_lookahead=1,
        # waitress refuses a body of this size or more (1 GB unless told), on its
        # Content-Length or as its chunks arrive, without keeping it
        max_request_body_size=app.config["MAX_CONTENT_LENGTH"] + 1,
        # waitress drops X-Forwarded-* unless it trusts the peer itself (one address or
        # any); with http.trusted_proxies the app decides whom to believe, per request
        # (web/proxies.py), so the header must reach it
        clear_untrusted_proxy_headers=not app.config["TRUSTED_PROXIES"],
    )
    server.channel_class = Channel
    # waitress sets these on each connection it accepts (its default is TCP_NODELAY)
    server.adj.socket_options = [
        *server.adj.socket_options,
        *_dead_peer_options(int(app.config.get("DEAD_PEER_S", DEAD_PEER_S))),
    ]
    state = app.extensions["peershop"]
    if state.feed is not None:
        state.feed.start()
    stopping = threading.Event()

    def run() -> None:
        # waitress's own run() loops until its socket map is empty; closing the map from
        # another thread races its select() (EBADF).  So the loop checks a flag between
        # polls and closes its sockets itself.
        while not stopping.is_set():
            wasyncore.loop(timeout=0.5, map=server._map, count=1)
        wasyncore.close_all(server._map)

    thread = threading.Thread(target=run, name="web", daemon=True)
    thread.start()
    log.info("web on http://%s:%s/", *server.getsockname()[:2])

    def stop() -> None:
        if state.feed is not None:
            state.feed.stop()  # open streams end, so their threads come free
        server.task_dispatcher.shutdown(timeout=5)
        stopping.set()
        try:
            server.pull_trigger()  # wake the loop from its poll
        except OSError:
            pass  # the loop saw the flag first and closed its sockets: it is awake
        thread.join(5)

    stop.address = server.getsockname()[:2]  # type: ignore[attr-defined]
    return stop


def serve_hub(hub: Any, listen: tuple[str, int]) -> Callable[[], None]:
    """The web view of a running hub, for ``peershop run`` (``http.threads``,
    ``http.streams``).

    A port that cannot be bound (taken, no permission) is logged and the hub runs on
    without its web view: badge decisions and ingest matter more than the screen.
    """
    from web import create_app

    try:
        http = hub.cfg.http
        return serve_in_thread(
            create_app(hub=hub), listen, threads=http.threads, streams=http.streams
        )
    except OSError as exc:
        log.error(
            "web view not started: cannot listen on %s:%s (%s); choose another address "
            "with http.listen in peershop.toml",
            *listen,
            str(exc),
        )
        return lambda: None
