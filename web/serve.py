"""Serve the app with waitress in a background thread (``peershop run``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask
from waitress import wasyncore
from waitress.server import create_server

log = logging.getLogger(__name__)


def serve_in_thread(
    app: Flask, listen: tuple[str, int], *, threads: int = 16
) -> Callable[[], None]:
    """Start waitress on ``listen`` (host, port); returns ``stop()``.

    Each open floor holds one waitress thread for its event stream, so ``threads`` is
    the number of wall screens and phones that can watch at once plus a few for pages.
    ``stop()`` ends the streams first, then closes the listening socket.
    """
    host, port = listen
    server = create_server(app, host=host, port=port, threads=threads, ident="peershop")
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
    """The web view of a running hub, for ``peershop run``.

    A port that cannot be bound (taken, no permission) is logged and the hub runs on
    without its web view: badge decisions and ingest matter more than the screen.
    """
    from web import create_app

    try:
        kiosk = {"KIOSK_NETWORKS": list(hub.cfg.http.kiosk_networks)}
        return serve_in_thread(create_app(kiosk, hub=hub), listen)
    except OSError as exc:
        log.error("web view not started: cannot listen on %s:%s (%s)", *listen, str(exc))
        return lambda: None
