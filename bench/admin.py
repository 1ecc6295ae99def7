"""Admin's tool edits: their request time, how soon the hub runs them, and what the
overrides cost a shop-file load.

A shop of 40 tools, 300 members and 10 trainings (three grants a member) on SQLite, a
private Mosquitto and the hub in this process.  Measured, each with its baseline in the
same run:

- **request**: ``POST /admin/tools/{id}`` changing the longest session (checked by the
  shop file's parser, written, the hub reloaded), against ``POST /admin/tools/{id}/lock``
  and ``unlock`` (written, the hub reloaded), through Flask's test client (server time).
- **to the hub**: from the request's start until ``hub.rules`` holds the new value, for
  a web app in the hub's process (``create_app(hub=hub)``, as ``peershop run`` serves it)
  and for one on the database alone (another process: the hub reads the shop version
  every 2 s).
- **load**: ``apply_shop`` of the unchanged file, with every tool holding 4 overrides
  and 300 grants overridden, against the same load with none.

    .venv/bin/python bench/admin.py [--edits 40] [--loads 5]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import select

from bench.common import dump, hub_config, latency_ms, machine
from hub.service.broker import PrivateBroker
from hub.service.service import Hub
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop
from hub.shopfile.tool_admin import edit_tool, form_values
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import Member, ShopMeta, Tool, TrainingGrant
from web import create_app
from web.auth import set_password

TOOLS, MEMBERS, TRAININGS = 40, 300, 10
OVERRIDDEN = {
    "policy": "timeout",
    "power.idle_timeout": "10m",
    "power.max_duration": "2h",
    "hours": "Mon-Sun 08:00-22:00",
}


def shop_text() -> str:
    lines = ["members:", "  - {handle: cora, name: Cora, roles: [member, coordinator]}"]
    lines += [f"  - {{handle: m{i}, name: Member {i}}}" for i in range(MEMBERS)]
    lines.append("trainings:")
    for t in range(TRAININGS):
        lines += [f"  - id: t{t}", "    granted:"]
        lines += [
            f"      - {{member: m{i}, by: cora, expires: 2031-06-30}}"
            for i in range(MEMBERS)
            if t in (i % TRAININGS, (i + 3) % TRAININGS, (i + 7) % TRAININGS)
        ]
    lines.append("tools:")
    for n in range(TOOLS):
        lines.append(
            f"  - {{id: tool-{n}, devices: [node-{n}], policy: tap, training: t{n % TRAININGS},"
            " power: {off_w: 5, busy_w: 100, idle_timeout: 20m, max_duration: 4h}}"
        )
    return "\n".join(lines) + "\n"


def timed_loads(sm: Any, text: str, n: int) -> list[float]:
    shop = parse_shop(text)
    out = []
    for _ in range(n):
        with sm() as session, session.begin():
            start = time.perf_counter()
            apply_shop(session, shop)
            out.append(time.perf_counter() - start)
            session.rollback()  # the same state for every run
    return out


def csrf(client: Any) -> str:
    import re

    page = client.get("/admin/tools/tool-0").get_data(as_text=True)
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)


def coordinator(app: Any) -> tuple[Any, str]:
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    import re

    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    r = client.post(
        "/login", data={"handle": "cora", "password": "bench-pass", "csrf_token": token}
    )
    assert r.status_code == 302
    return client, csrf(client)


def edit_form(sm: Any, tool_id: str, max_duration: str, token: str) -> dict[str, Any]:
    with sm() as session:
        values = form_values(session.get(Tool, tool_id))
    names = {
        "policy": "policy",
        "training": "training",
        "off_w": "power.off_w",
        "idle_w": "power.idle_w",
        "busy_w": "power.busy_w",
        "hysteresis_w": "power.hysteresis_w",
        "idle_timeout": "power.idle_timeout",
        "hours": "hours",
    }
    form = {name: values[setting] for name, setting in names.items()}
    return {**form, "max_duration": max_duration, "csrf_token": token}


def run(edits: int, loads: int) -> dict[str, Any]:
    report: dict[str, Any] = {"bench": "admin", "machine": machine()}
    work = Path(tempfile.mkdtemp(prefix="peershop-bench-admin-"))
    data_dir = work / "data"
    data_dir.mkdir()
    db_url = f"sqlite:///{data_dir / 'peershop.db'}"
    engine = make_engine(db_url)
    migrate(engine)
    sm = session_factory(engine)
    text = shop_text()
    with sm.begin() as session:
        apply_shop(session, parse_shop(text))
        set_password(
            session, session.scalar(select(Member).where(Member.handle == "cora")), "bench-pass"
        )

    # load: none overridden (baseline), then every tool with 4 overrides, every grant too
    report["load_no_overrides"] = latency_ms(timed_loads(sm, text, loads))
    with sm.begin() as session:
        for n in range(TOOLS):
            values = form_values(session.get(Tool, f"tool-{n}"))
            values.update(
                {
                    "policy": "timeout",
                    "power.idle_timeout": "10m",
                    "power.max_duration": "2h",
                    "hours": "Mon-Sun 08:00-22:00",
                }
            )
            edit_tool(session, f"tool-{n}", values, "cora")
        cora = session.scalar(select(Member.id).where(Member.handle == "cora"))
        for grant in session.scalars(select(TrainingGrant)):
            session.add(ShopMeta(key=f"override:grant:{grant.id}", value=cora))
    report["load_with_overrides"] = latency_ms(timed_loads(sm, text, loads))
    with sm.begin() as session:
        lines = apply_shop(session, parse_shop(text))
    report["load_with_overrides"]["lines_kept"] = sum(line.startswith("!") for line in lines)

    broker = PrivateBroker(work / "mosquitto").start()
    hub = Hub(hub_config(data_dir, db_url, broker.port, "bench-admin-hub"))
    hub.start()
    try:
        assert hub.wait_ready(15), "the hub did not connect"
        in_process, token = coordinator(create_app({"SECRET_KEY": "bench"}, hub=hub))
        other, other_token = coordinator(create_app({"SECRET_KEY": "bench"}, sm=sm))
        edit_s, lock_s, here_s, there_s = [], [], [], []
        for i in range(edits):
            tool_id = f"tool-{i % TOOLS}"
            want = 3600 * (3 + i % 2 * 2)  # 3h or 5h, never the current 2h twice in a row
            form = edit_form(sm, tool_id, f"{want // 3600}h", token)
            start = time.perf_counter()
            r = in_process.post(f"/admin/tools/{tool_id}", data=form)
            edit_s.append(time.perf_counter() - start)
            assert r.status_code == 302, r.get_data(as_text=True)
            rules = hub.rules.data.tools[tool_id].rules
            assert rules.max_duration.total_seconds() == want  # applied before the answer
            here_s.append(time.perf_counter() - start)
            for action in ("lock", "unlock"):
                start = time.perf_counter()
                r = in_process.post(f"/admin/tools/{tool_id}/{action}", data={"csrf_token": token})
                lock_s.append(time.perf_counter() - start)
                assert r.status_code == 302
        for i in range(min(edits, 10)):
            tool_id = f"tool-{i}"
            want = 3600 * (6 + i % 2)
            form = edit_form(sm, tool_id, f"{want // 3600}h", other_token)
            start = time.perf_counter()
            assert other.post(f"/admin/tools/{tool_id}", data=form).status_code == 302
            while hub.rules.data.tools[tool_id].rules.max_duration.total_seconds() != want:
                if time.perf_counter() - start > 10:
                    raise RuntimeError("the hub did not take the change within 10 s")
                time.sleep(0.001)
            there_s.append(time.perf_counter() - start)
        report["request_tool_edit"] = latency_ms(edit_s)
        report["request_lock_unlock_baseline"] = latency_ms(lock_s)
        report["to_hub_in_process"] = latency_ms(here_s)
        report["to_hub_other_process"] = latency_ms(there_s)
    finally:
        hub.stop()
        broker.stop()
        engine.dispose()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edits", type=int, default=40)
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(dump(run(args.edits, args.loads)))


if __name__ == "__main__":
    main()
