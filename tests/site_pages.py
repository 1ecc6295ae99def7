"""Every page of the web view, for each kind of visitor, on a shop with something on
every page: the browser tests that look at all pages at once (phone width, axe-core,
the Nu Html Checker) share it.

:func:`serve_busy_shop` serves a hub whose shop has a closed period with balances, a
claimed task, a big claim waiting for a confirmation, a proposed task, a reservation, an
API token, a member in the space, a busy tool and an unknown card at the desk reader.
:data:`PAGES` names the pages each visitor sees; :func:`tour` logs a visitor in and
opens each of their pages in turn.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hub.config import Config
from hub.ledger import reservations, taskboard
from hub.ledger.closing import close_period
from hub.service.service import Hub
from tests import browser as chromium
from tests.helpers import REPO, Device, event_payload, wait_for
from web.auth import create_token

SHOP = """
projects:
  - {id: commons, name: Shop commons}
  - {id: bikes, name: Bike workshop, model: flat_rate}
members:
  - {handle: cora, name: Cora Coordinator, roles: [member, coordinator], badges: ["0A0B0C0D"]}
  - {handle: ada, name: Ada Trainer, roles: [member, trainer], badges: ["04A1B2C3D4E5F6"]}
  - {handle: dana, name: Dana Member-with-a-rather-long-name, badges: ["8A11F0C3"]}
trainings:
  - id: laser
    name: Laser cutter induction
    granted:
      - {member: ada, by: cora}
      - {member: dana, by: ada, expires: 2099-06-30}
tools:
  - id: laser-1
    name: Laser cutter (60 W CO2)
    project: commons
    devices: [laser-node]
    policy: tap
    training: laser
    power: {off_w: 8, idle_w: 60, busy_w: 250}
    scarce: {slots: "Mon-Sun 18:00-21:00", per_slot: 1h}
  - {id: drillpress-1, name: Drill press, devices: [drill-node], policy: tap}
  - {id: compressor-1, name: Workshop compressor, project: bikes, devices: [comp-node]}
tasks:
  - {id: empty-dust, title: Empty the dust collector, project: commons, slots: 4, hours: 0.5}
  - {id: sweep-floor, title: Sweep the workshop floor, project: commons, slots: 3, hours: 0.75}
  - id: laser-maintenance
    title: Clean the laser's lens and mirrors, check the chiller
    project: commons
    hours: 1.5
    resource: laser-1
  - {id: bike-open-evening, title: Host the bike open evening, project: bikes, slots: 2, hours: 3}
stations:
  - {device: door-reader, kind: sign_in}
  - {device: desk-reader, kind: task_station}
"""

MEMBER, TRAINER, COORDINATOR = "dana", "ada", "cora"

# path templates; {period} is the closed period's id
PAGES: dict[str | None, tuple[str, ...]] = {
    None: ("/", "/login", "/no-such-page"),
    MEMBER: ("/", "/tasks", "/periods", "/periods/{period}", "/me"),
    COORDINATOR: (
        "/",
        "/tasks",
        "/periods",
        "/periods/{period}",
        "/me",
        "/admin/",
        "/admin/tools/laser-1",
        "/admin/trainings",
    ),
}
VISITORS = {None: "anonymous", MEMBER: "member", COORDINATOR: "coordinator"}


def _seed(hub: Hub) -> int:
    """Records on every page; returns the closed period's id."""
    cfg, now = hub.cfg, datetime.now(UTC)
    with hub.sm.begin() as s:
        taskboard.claim(s, MEMBER, "sweep-floor", now - timedelta(hours=3), cfg)
        taskboard.done(s, MEMBER, "sweep-floor", now - timedelta(hours=2), hours="1", cfg=cfg)
        taskboard.claim(s, TRAINER, "bike-open-evening", now - timedelta(hours=3), cfg)
        taskboard.done(s, TRAINER, "bike-open-evening", now - timedelta(hours=2), cfg=cfg)
    with hub.sm.begin() as s:
        (closed,) = close_period(s, cfg, now - timedelta(hours=1), force=True)
    with hub.sm.begin() as s:
        taskboard.want(s, MEMBER, "laser-maintenance", now)
        taskboard.claim(s, MEMBER, "empty-dust", now, cfg)
        taskboard.claim(s, TRAINER, "sweep-floor", now - timedelta(minutes=30), cfg)
        # more than half again the posted hours: waits for a confirmation
        taskboard.done(s, TRAINER, "sweep-floor", now, hours="4", cfg=cfg)
        taskboard.propose(s, MEMBER, "Oil the bandsaw", "commons", "0.5", now)
        day = (now + timedelta(days=3)).date()
        start = datetime(day.year, day.month, day.day, 19, 0, tzinfo=UTC)
        reservations.reserve(s, cfg, MEMBER, "laser-1", start, "1.5", now)
        create_token(s, "grafana", "member")
    return closed.period_id


def _traffic(hub: Hub, port: int) -> None:
    """A member in the space, a busy laser and an unknown card at the desk reader."""
    devices = {name: Device(port, name) for name in ("door-reader", "laser-node", "desk-reader")}
    try:
        devices["door-reader"].send(event_payload(1, 0, "badge", uid="8A11F0C3"))
        devices["laser-node"].send(event_payload(1, 0, "badge", uid="8A11F0C3"))
        devices["laser-node"].send(event_payload(1, 1, "power", w=812.4))
        devices["desk-reader"].send(event_payload(1, 0, "badge", uid="DEADBEEF"))
        for device in devices.values():
            device.flush()
        wait_for(
            lambda: hub.tool_states(datetime.now(UTC))["laser-1"].state == "busy",
            what="a busy laser",
        )
    finally:
        for device in devices.values():
            device.close()


@contextmanager
def serve_busy_shop(cfg: Config, port: int) -> Iterator[tuple[str, int]]:
    """The shop of :data:`SHOP` with records on every page: ``(base URL, closed period)``."""
    passwords = (MEMBER, TRAINER, COORDINATOR)
    with chromium.serve_shop(cfg, SHOP, passwords=passwords) as (hub, url):
        period = _seed(hub)
        _traffic(hub, port)
        yield url, period


def tour(
    browser: Any, url: str, period: int, visitor: str | None, errors: list[str], **options: Any
) -> Iterator[tuple[str, Any]]:
    """Log ``visitor`` in (None: nobody) in a new page (``options`` go to
    ``browser.new_page``) and open each of their :data:`PAGES`: yields ``(path, page)``."""
    page = chromium.open_page(browser, errors, **options)
    try:
        if visitor is not None:
            chromium.log_in(page, url, visitor)
        for template in PAGES[visitor]:
            path = template.format(period=period)
            page.goto(f"{url}{path}")
            page.wait_for_load_state("load")
            yield path, page
    finally:
        page.close()


# --- the checkers from npm (tests/package.json) -----------------------------------------

NODE_MODULES = REPO / "tests" / "node_modules"


def node_package(*parts: str) -> Path:
    """A file of an npm package of tests/package.json, or a skip (a failure on CI)."""
    path = NODE_MODULES.joinpath(*parts)
    if not path.exists():
        message = f"{path} is missing: run `npm ci` in tests/ (./dev test does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def vnu(files: list[Path]) -> list[dict[str, Any]]:
    """The Nu Html Checker's messages on ``files`` (one run of Java for all)."""
    jar = node_package("vnu-jar", "build", "dist", "vnu.jar")
    java = shutil.which("java")
    if java is None:
        message = "java is missing: apt-get install -y default-jre-headless"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run(
        [java, "-jar", str(jar), "--format", "json", "--exit-zero-always", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(done.stderr)["messages"]
