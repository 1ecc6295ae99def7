"""Serve the app with waitress in a background thread (``peershop run``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask
from waitress import wasyncore
from waitress.server import create_server

from hub.config import PAGE_THREADS, SCHEMA, default_streams
from web.stream import StreamSlots

log = logging.getLogger(__name__)

THREADS = SCHEMA["http"]["threads"].default


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
    are open at once and at least ``PAGE_THREADS`` threads stay for pages and the API.
    A stream beyond the cap gets 503 and its page polls (web/stream.py).
    ``stop()`` ends the streams first, then closes the listening socket.
    """
    streams = default_streams(threads) if streams is None else streams
    if not 0 <= streams <= threads - PAGE_THREADS:
        raise ValueError(
            f"streams must leave {PAGE_THREADS} of the {threads} threads for pages, got {streams}"
        )
    host, port = listen
    app.extensions["peershop.streams"] = StreamSlots(streams)
    server = create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        ident="peershop",
        # keep reading a connection while its request runs, so a stream whose browser
        # closed the socket sees it (waitress.client_disconnected) and frees its thread
        channel_request_lookahead=1,
    )
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
        kiosk = {"KIOSK_NETWORKS": list(hub.cfg.http.kiosk_networks)}
        http = hub.cfg.http
        return serve_in_thread(
            create_app(kiosk, hub=hub), listen, threads=http.threads, streams=http.streams
        )
    except OSError as exc:
        log.error("web view not started: cannot listen on %s:%s (%s)", *listen, str(exc))
        return lambda: None
