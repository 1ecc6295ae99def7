"""Two sites, one shop (issue #9): two hubs, each with its own Mosquitto, both bridged to a
central Mosquitto, one PostgreSQL database.

Real parts throughout: three Mosquitto processes bridged as deploy/two-sites.md says (in
both directions, so each hub also hears the other site's devices), three ``peershop run``
processes (a hub per site, and the central view: a hub of a site with no tools on the
central broker) and PostgreSQL.  The test asserts what the issue asks: each site's events
are stored exactly once, a member trained at one site is let in at the other, the central
floor lists both sites' tools, and a period that has ended is closed once.
"""

from __future__ import annotations

import json
import re
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from hub.admin.sites import bridge_conf
from hub.config import load_config
from hub.ledger.periods import open_period
from hub.service.broker import PrivateBroker, free_port
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import BadgeDecision, Event, Member, Period, TrainingGrant
from tests.helpers import Device, HubProcess, Listener, event_payload, wait_for

ADA = "04A1B2C3D4E5F6"  # a trainer at both sites
BOB = "04B0B0B0B0B0B0"  # trained at north during the test

SHOP = f"""
members:
  - {{handle: ada, name: Ada L., roles: [member, trainer], badges: ["{ADA}"]}}
  - {{handle: bob, name: Bob K., roles: [member], badges: ["{BOB}"]}}
trainings:
  - {{id: laser, granted: [{{member: ada, by: ada}}]}}
tools:
  - {{id: laser-north, name: North laser, site: north, devices: [laser-n-node], training: laser}}
  - {{id: laser-south, name: South laser, site: south, devices: [laser-s-node], training: laser}}
  - {{id: saw-south, name: South saw, site: south, devices: [saw-s-node]}}
stations:
  - {{device: door-north, kind: sign_in, site: north}}
  - {{device: door-south, kind: sign_in, site: south}}
"""


def hub_config(folder: Path, site: str, port: int, db_url: str) -> Path:
    folder.mkdir(parents=True)
    path = folder / "peershop.toml"
    path.write_text(
        f'[site]\nid = "{site}"\ndata_dir = "{folder / "data"}"\n'
        f'[db]\nurl = "{db_url}"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nclient_id = "peershop-hub-{site}"\n'
        f'[http]\nlisten = "127.0.0.1:{free_port()}"\n'
    )
    return path


def http_get(config: Path, path: str) -> str:
    """GET ``path`` from the web view of the hub running with ``config``."""
    listen = re.search(r'listen = "([^"]+)"', config.read_text()).group(1)
    with urllib.request.urlopen(f"http://{listen}{path}", timeout=10) as response:
        return response.read().decode()


def metrics(config: Path) -> dict[str, float]:
    text = http_get(config, "/metrics")
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^(peershop_\w+) ([0-9.e+]+)$", text, re.MULTILINE)
    }


def reply_to(listener: Listener, device: str, seq: int) -> dict | None:
    for reply in listener.payloads(f"peershop/dev/{device}/cmd"):
        if reply.get("re") == seq:
            return reply
    return None


def await_reply(listener: Listener, device: str, seq: int) -> dict:
    listener.wait(lambda _: reply_to(listener, device, seq) is not None)
    return reply_to(listener, device, seq)  # type: ignore[return-value]


def allowlist_versions(listener: Listener, device: str) -> list[int]:
    return [a["version"] for a in listener.payloads(f"peershop/dev/{device}/allowlist")]


def test_two_sites_share_one_shop(tmp_path: Path, pg_url: str):
    now = datetime.now(UTC)
    engine = make_engine(pg_url)
    migrate(engine)
    sm = session_factory(engine)
    cfg = load_config(None, env={}, search=(), overrides={"db": {"url": pg_url}})
    with sm.begin() as session:
        apply_shop(session, parse_shop(SHOP))
        # a period that ended a while ago: both hubs find it due at their first period job
        open_period(session, cfg, now - timedelta(days=8))

    central = PrivateBroker(tmp_path / "central").start()
    brokers: dict[str, PrivateBroker] = {}
    hubs: dict[str, HubProcess] = {}
    listeners: list[Listener] = []
    devices: list[Device] = []
    try:
        bridges = Listener(central.port, "peershop/site/+/bridge")
        listeners.append(bridges)
        for site in ("north", "south"):
            conf = bridge_conf(site, "127.0.0.1", central.port, direction="both")
            brokers[site] = PrivateBroker(tmp_path / f"broker-{site}", extra_conf=conf).start()
        # Each bridge announces itself on central once connected (notification_topic).
        bridges.wait(
            lambda msgs: (
                {m.topic for m in msgs if m.payload == b"1"}
                == {"peershop/site/north/bridge", "peershop/site/south/bridge"}
            )
        )
        north_port, south_port = brokers["north"].port, brokers["south"].port
        north = Listener(
            north_port, "peershop/dev/+/cmd", "peershop/dev/+/allowlist", "peershop/dev/+/event"
        )
        south = Listener(south_port, "peershop/dev/+/cmd", "peershop/dev/+/allowlist")
        listeners += [north, south]
        # The central view is a hub of a site with no tools, on the central broker: it
        # hears every site's devices, decides for none, and serves the whole shop's floor.
        ports = {"north": north_port, "south": south_port, "central": central.port}
        configs = {
            site: hub_config(tmp_path / f"hub-{site}", site, ports[site], pg_url) for site in ports
        }
        for site, port in ports.items():
            hubs[site] = HubProcess(configs[site], tmp_path / f"hub-{site}.log")
            hubs[site].start(port)

        # Each hub issues the allow-lists of its own site's tools only, to its own broker.
        south.wait(lambda _: allowlist_versions(south, "laser-s-node"))
        north.wait(lambda _: allowlist_versions(north, "laser-n-node"))
        assert not allowlist_versions(north, "laser-s-node")
        assert not allowlist_versions(south, "laser-n-node")

        laser_n = Device(north_port, "laser-n-node")
        laser_s = Device(south_port, "laser-s-node")
        saw_s = Device(south_port, "saw-s-node")
        visitor = Device(north_port, "visitor-node")  # bound to no tool: every hub stores it
        devices += [laser_n, laser_s, saw_s, visitor]

        # Bob is not trained yet: the south laser says so.
        laser_s.send(event_payload(1, 0, "badge", uid=BOB))
        assert await_reply(south, "laser-s-node", 0) == {
            "re": 0,
            "action": "deny",
            "reason": "not_trained",
        }

        # Two-card induction at north: Ada, then Bob, at the north laser.
        laser_n.send(event_payload(1, 0, "badge", uid=ADA))
        assert await_reply(north, "laser-n-node", 0)["action"] == "grant"
        laser_n.send(event_payload(1, 1, "badge", uid=BOB))
        reply = await_reply(north, "laser-n-node", 1)
        assert (reply["action"], reply["member"]) == ("grant", "Bob K.")

        # South hears of the training (shop_version) and re-issues its laser's allow-list.
        first = max(allowlist_versions(south, "laser-s-node"))
        south.wait(lambda _: max(allowlist_versions(south, "laser-s-node")) > first)
        laser_s.send(event_payload(1, 1, "badge", uid=BOB))
        reply = await_reply(south, "laser-s-node", 1)
        assert reply["action"] == "grant" and reply["member"] == "Bob K."
        with sm() as session:
            trained = session.scalars(
                select(Member.handle)
                .join(TrainingGrant, TrainingGrant.member_id == Member.id)
                .where(TrainingGrant.training_id == "laser")
            ).all()
        assert sorted(trained) == ["ada", "bob"]

        # Power at each site, and a device bound nowhere that both hubs hear.
        laser_n.send_events(1, range(2, 202))
        saw_s.send_events(1, range(0, 200))
        visitor.send_events(1, range(0, 100))
        for device in devices:
            device.flush()
        sent = {"laser-n-node": 202, "laser-s-node": 2, "saw-s-node": 200, "visitor-node": 100}

        def stored() -> dict[str, int]:
            with sm() as session:
                rows = session.execute(
                    select(Event.device_id, func.count()).group_by(Event.device_id)
                ).all()
            return dict(rows)

        wait_for(lambda: stored() == sent, what=f"events stored: {sent}, got {stored()}")
        # All three hubs heard the visitor: each of its events was stored by one and
        # dropped by identity by the two others, so the hubs' counts add up exactly.
        wait_for(
            lambda: (
                sum(metrics(c)["peershop_events_total"] for c in configs.values())
                == sum(sent.values())
            ),
            what="the hubs' stored-event counts to add up",
        )
        # The hubs hearing the visitor over a bridge get there later, and are told by the
        # database that each identity is stored already.
        wait_for(
            lambda: sum(metrics(c)["peershop_duplicates_total"] for c in configs.values()) == 200,
            what="the other two hubs to drop each of the visitor's events by identity",
        )
        seen = {site: metrics(configs[site]) for site in hubs}
        assert sum(m["peershop_events_total"] for m in seen.values()) == sum(sent.values())
        # Each hub heard the other site's devices over the bridge and left them alone.
        assert seen["north"]["peershop_other_site_total"] >= 200  # saw-s-node at least
        assert seen["south"]["peershop_other_site_total"] >= 202  # laser-n-node at least
        assert seen["central"]["peershop_other_site_total"] >= 404  # every site's devices

        # The period that had ended was closed once, by one of the hubs.
        def periods_due() -> int:
            with sm() as session:
                return session.scalar(
                    select(func.count())
                    .select_from(Period)
                    .where(Period.closed_at.is_(None), Period.end <= now)
                )

        wait_for(lambda: periods_due() == 0, what="the ended periods to be closed")
        with sm() as session:
            closed = session.scalar(
                select(func.count()).select_from(Period).where(Period.closed_at.is_not(None))
            )
        assert closed >= 1

        # The central view lists both sites' tools, grouped by site, from the database.
        page = http_get(configs["central"], "/")
        order = [page.find(text) for text in ("Site north", "North laser", "Site south")]
        assert -1 not in order and order == sorted(order), page
        assert page.find("South laser") > order[-1] and page.find("South saw") > order[-1]
        tools = json.loads(http_get(configs["central"], "/api/v1/tools"))["tools"]
        assert {t["id"]: (t["site"], t["state"]) for t in tools if t["id"] != "saw-south"} == {
            "laser-north": ("north", "in_use"),  # Bob's, since his induction
            "laser-south": ("south", "in_use"),  # Bob's, since he badged there
        }
        # A site hub's own floor: its tools live from its rules, the other site's stored.
        tools = json.loads(http_get(configs["north"], "/api/v1/tools"))["tools"]
        states = {t["id"]: (t["site"], t["state"], t["w"]) for t in tools}
        site, state, watts = states["laser-north"]  # live: the power it last measured
        assert (site, state, watts) == ("north", "busy", 201.0)
        assert states["laser-south"] == ("south", "in_use", None)  # stored: no power
        assert states["saw-south"][0] == "south"

        # While south's hub is down, north and central hear south's laser and leave it
        # alone: when south's hub is back it finds the badge unacked and decides it itself.
        assert hubs["south"].terminate() == 0
        laser_s.send(event_payload(1, 2, "badge", uid=BOB))
        laser_s.flush()
        north.wait(
            lambda msgs: any(
                m.topic == "peershop/dev/laser-s-node/event" and b'"seq":2' in m.payload
                for m in msgs
            )
        )

        # A sentinel after it: once the two running hubs have handled the sentinel (each
        # takes its messages in order), they have handled south's badge before it.
        def handled(site: str) -> float:
            m = metrics(configs[site])
            return m["peershop_events_total"] + m["peershop_duplicates_total"]

        before = {site: handled(site) for site in ("north", "central")}
        visitor.send(event_payload(2, 0, "power", w=1.0))
        visitor.flush()
        for site in before:
            wait_for(lambda s=site: handled(s) > before[s], what=f"{site} to handle the sentinel")

        def has(device: str, boot: int, seq: int) -> bool:
            with sm() as session:
                return (
                    session.scalar(
                        select(func.count())
                        .select_from(Event)
                        .where(Event.device_id == device, Event.boot == boot, Event.seq == seq)
                    )
                    == 1
                )

        assert has("visitor-node", 2, 0)
        assert not has("laser-s-node", 1, 2)
        hubs["south"].start(south_port)
        wait_for(lambda: has("laser-s-node", 1, 2), what="south to store its own badge")
        with sm() as session:
            decision = session.scalars(
                select(BadgeDecision).where(
                    BadgeDecision.device_id == "laser-s-node", BadgeDecision.seq == 2
                )
            ).one()
        assert (decision.member, decision.tool_id) == ("bob", "laser-south")

        logs = "".join(p.log.read_text() for p in hubs.values())
        closes = [int(n) for n in re.findall(r"closed (\d+) period\(s\)", logs)]
        assert sum(closes) == closed, logs[-3000:]
    finally:
        for device in devices:
            device.link.stop()
        for listener in listeners:
            listener.close()
        for hub in hubs.values():
            if hub.proc is not None and hub.proc.poll() is None:
                hub.terminate()
        for broker in brokers.values():
            broker.stop()
        central.stop()
        engine.dispose()
