"""The web app with Flask's test client: every page and endpoint with each role."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import (
    ApiToken,
    Badge,
    BadgeDecision,
    DeadLetter,
    Device,
    EffortRecord,
    Event,
    Member,
    Period,
    PresenceChange,
    Project,
    Task,
    Tool,
    ToolBinding,
    UsageSession,
)
from tests.conftest import database_url
from web import create_app
from web.auth import create_token, set_password, set_pin

T0 = datetime.now(UTC) - timedelta(minutes=30)
EVIL = '<script>alert("x")</script>'


def seed(sm: Any) -> None:
    with sm.begin() as s:
        ada = Member(handle="ada", name="Ada L.", roles=["member", "trainer"])
        bob = Member(handle="bob", name="Bob " + EVIL, roles=["member"])
        cora = Member(handle="cora", name="Cora C.", roles=["member", "coordinator"])
        s.add_all([ada, bob, cora])
        s.flush()
        s.add(Badge(uid="04A1B2C3D4E5F6", member_id=ada.id))
        s.add(Project(id="commons", name="Shop commons"))
        s.add(Task(id="sweep", title="Sweep the floor", project_id="commons", slots=2))
        s.add(
            Task(
                id="empty-dust",
                title="Empty the dust extractor",
                project_id="commons",
                hours=Decimal("0.5"),
                weight=Decimal("1.5"),
            )
        )
        s.add(Task(id="evil", title="Fix " + EVIL, project_id="commons"))
        set_password(s, ada, "ada-password")
        set_pin(s, ada, "246810")
        set_password(s, bob, "bob-password")
        set_password(s, cora, "cora-password")
        s.add(Tool(id="laser-1", name="Laser cutter", policy="tap"))
        s.add(Tool(id="lathe", name="Lathe", policy="tap", locked=True))
        s.add(Tool(id="drill", name="Drill " + EVIL, policy="tap"))
        s.add(
            Device(
                id="laser-node",
                approval="approved",
                online=True,
                boot=3,
                fw="1.4.2",
                kind=["reader"],
                last_seen=T0,
            )
        )
        s.add(Device(id="drill-node", approval="approved", online=False, boot=1, fw="1.0"))
        s.add(Device(id="mystery", approval="pending", online=True))
        s.add(ToolBinding(tool_id="drill", kind="device", ref="drill-node"))
        s.add(UsageSession(key="k1", tool_id="laser-1", member="bob", start=T0))
        s.add(
            UsageSession(
                key="k2",
                tool_id="laser-1",
                member="ada",
                start=T0 - timedelta(days=1),
                end=T0 - timedelta(hours=23),
                busy_s=600,
                idle_s=60,
                wh=120.5,
                close_reason="tap_out",
            )
        )
        s.add(
            EffortRecord(
                key="e1",
                member="ada",
                task_id="empty-dust",
                start=T0,
                end=T0,
                hours=Decimal("0.5"),
                weight=Decimal("1.5"),
                source="station",
            )
        )
        s.add(
            EffortRecord(
                key="e2",
                member="bob",
                task_id="sweep",
                start=T0,
                end=T0,
                hours=Decimal("1"),
                weight=Decimal("1"),
                source="station",
            )
        )
        s.add(PresenceChange(member="bob", at=T0, state="in", reason="badge"))
        s.add(
            Event(
                device_id="laser-node",
                boot=3,
                seq=0,
                type="badge",
                received_at=T0,
                data={"uid": "04A1B2C3D4E5F6"},
            )
        )
        s.add(
            BadgeDecision(
                device_id="desk-reader",
                boot=1,
                seq=0,
                at=T0,
                uid="0A0B0C0D",
                member=None,
                action="deny",
                reason="unknown_badge",
            )
        )
        s.add(
            DeadLetter(
                received_at=datetime.now(UTC),
                topic="peershop/dev/x/event",
                reason="bad json",
                payload=b"{",
                size=1,
            )
        )


@pytest.fixture(autouse=True)
def fast_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cheap argon2 parameters in tests (verification reads them from each hash)."""
    import web.auth

    monkeypatch.setattr(
        web.auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


@pytest.fixture
def sm(tmp_path: Path):
    engine = make_engine(database_url(tmp_path, "web.db"))
    migrate(engine)
    factory = session_factory(engine)
    seed(factory)
    yield factory
    engine.dispose()


@pytest.fixture
def app(sm: Any) -> Flask:
    return create_app({"SECRET_KEY": "test", "TESTING": True}, sm=sm)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def csrf(client: FlaskClient, path: str = "/login") -> str:
    page = client.get(path).get_data(as_text=True)
    match = re.search(r'name="(?:\w+-)?csrf_token" type="hidden" value="([^"]+)"', page)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def login(client: FlaskClient, handle: str, password: str | None = None) -> None:
    token = csrf(client)
    response = client.post(
        "/login",
        data={"handle": handle, "password": password or f"{handle}-password", "csrf_token": token},
    )
    assert response.status_code == 302, response.get_data(as_text=True)


ROLE_LOGINS = {"anonymous": None, "member": "bob", "trainer": "ada", "coordinator": "cora"}


@pytest.fixture(params=list(ROLE_LOGINS))
def as_role(request: pytest.FixtureRequest, client: FlaskClient) -> tuple[str, FlaskClient]:
    handle = ROLE_LOGINS[request.param]
    if handle:
        login(client, handle)
    return request.param, client


# --- pages --------------------------------------------------------------------------------


def test_floor_shows_every_tool_state_and_names_only_when_logged_in(as_role):
    role, client = as_role
    page = client.get("/").get_data(as_text=True)
    assert "Laser cutter" in page and "in use" in page
    assert 'id="tool-lathe"' in page and "state-locked" in page
    assert "state-offline" in page  # the drill's only device is offline
    assert "drill-node" in page and "mystery" in page  # offline and pending devices
    assert 'dead letters in the last hour: <strong class="bad">1</strong>' in page
    if role == "anonymous":
        assert "Bob" not in page and "Log in to see who" in page
    else:
        assert "Bob &lt;script&gt;" in page
    assert EVIL not in page


def test_pages_by_role(as_role):
    role, client = as_role
    me = client.get("/me")
    admin = client.get("/admin/")
    if role == "anonymous":
        assert me.status_code == 302 and "/login" in me.headers["Location"]
        assert admin.status_code == 302
        return
    assert me.status_code == 200
    assert admin.status_code == (200 if role == "coordinator" else 403)
    assert client.get("/floor/panels").status_code == 200


def test_me_shows_my_records_only(client):
    login(client, "ada")
    page = client.get("/me").get_data(as_text=True)
    assert "Ada L." in page and "04A1B2C3D4E5F6" in page and "empty-dust" in page
    assert "sweep" not in page  # bob's effort
    assert "tap_out" in page


def test_script_tag_in_names_is_escaped_everywhere(client):
    login(client, "cora")
    for path in ("/", "/floor/panels", "/admin/", "/me"):
        page = client.get(path).get_data(as_text=True)
        assert "<script>alert" not in page, path
    admin = client.get("/admin/").get_data(as_text=True)
    assert "Bob &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in admin
    assert "Drill &lt;script&gt;" in admin


def test_security_headers(client):
    response = client.get("/")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    page = response.get_data(as_text=True)
    assert "<script>" not in page and "style=" not in page  # no inline script or style
    assert "http://" not in page and "https://" not in page  # nothing from the internet


# --- login ----------------------------------------------------------------------------------


def test_wrong_password_and_unknown_handle_look_the_same(client):
    token = csrf(client)
    wrong = client.post("/login", data={"handle": "ada", "password": "nope", "csrf_token": token})
    nobody = client.post("/login", data={"handle": "zed", "password": "x", "csrf_token": token})
    assert wrong.status_code == nobody.status_code == 401
    assert "Wrong handle or password" in wrong.get_data(as_text=True)
    assert client.get("/me").status_code == 302


def test_kiosk_login_by_badge_and_pin(client):
    token = csrf(client)
    bad = client.post(
        "/login/kiosk", data={"badge": "04a1b2c3d4e5f6", "pin": "999999", "csrf_token": token}
    )
    assert bad.status_code == 401
    ok = client.post(
        "/login/kiosk", data={"badge": "04a1b2c3d4e5f6", "pin": "246810", "csrf_token": token}
    )
    assert ok.status_code == 302
    assert "Ada L." in client.get("/me").get_data(as_text=True)


def test_csrf_is_required_on_every_form(client):
    no_token = {"handle": "ada", "password": "ada-password"}
    assert client.post("/login", data=no_token).status_code == 400
    no_token = {"badge": "04A1B2C3D4E5F6", "pin": "246810"}
    assert client.post("/login/kiosk", data=no_token).status_code == 400
    login(client, "cora")
    for path in (
        "/admin/tools/laser-1/lock",
        "/admin/devices/mystery/approve",
        "/admin/tokens",
        "/admin/badges/assign",
        "/admin/members/secret",
        "/admin/tokens/1/revoke",
        "/logout",
    ):
        assert client.post(path, data={}).status_code == 400, path
    assert client.get("/me").status_code == 200  # still logged in: logout needed its token


def test_login_delays_per_account_then_per_address(sm):
    """From a browser that never logged in (no known device): see test_web_trust.py."""
    limits = {"LOGIN_FREE_PER_ACCOUNT": 3, "LOGIN_FREE_PER_ADDRESS": 5, "LOGIN_FIRST_DELAY_S": 60}
    app = create_app({"SECRET_KEY": "t", **limits}, sm=sm)
    client = app.test_client()
    token = csrf(client)
    codes = [
        client.post(
            "/login", data={"handle": "ada", "password": "x", "csrf_token": token}
        ).status_code
        for _ in range(4)
    ]
    assert codes == [401, 401, 401, 429]
    # even the right password waits now: it is not even checked during the delay
    right = client.post(
        "/login", data={"handle": "ada", "password": "ada-password", "csrf_token": token}
    )
    assert right.status_code == 429 and right.headers["Retry-After"] == "60"
    assert "try again in 60 s" in right.get_data(as_text=True)
    codes = [
        client.post(
            "/login", data={"handle": "bob", "password": "x", "csrf_token": token}
        ).status_code
        for _ in range(3)
    ]
    assert codes == [401, 401, 429]  # 5 failures from this address in all
    other = app.test_client()
    token2 = csrf(other)
    assert (
        other.post(
            "/login",
            data={"handle": "cora", "password": "cora-password", "csrf_token": token2},
            environ_base={"REMOTE_ADDR": "10.0.0.9"},
        ).status_code
        == 302
    )


def test_logout(client):
    login(client, "ada")
    token = csrf(client, "/")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/me").status_code == 302


def test_suspended_member_is_logged_out_and_cannot_log_in(client, sm):
    login(client, "bob")
    with sm.begin() as s:
        s.scalar(select(Member).where(Member.handle == "bob")).suspended = True
    assert client.get("/me").status_code == 302
    token = csrf(client)
    assert (
        client.post(
            "/login", data={"handle": "bob", "password": "bob-password", "csrf_token": token}
        ).status_code
        == 401
    )


def test_open_redirect_is_refused(client):
    token = csrf(client)
    response = client.post(
        "/login?next=//evil.example/x",
        data={"handle": "ada", "password": "ada-password", "csrf_token": token},
    )
    assert response.headers["Location"] == "/"


def test_kiosk_network_sees_names_without_login(sm):
    app = create_app({"SECRET_KEY": "t", "KIOSK_NETWORKS": ["10.1.0.0/24"]}, sm=sm)
    client = app.test_client()
    kiosk = client.get("/", environ_base={"REMOTE_ADDR": "10.1.0.7"}).get_data(as_text=True)
    other = client.get("/", environ_base={"REMOTE_ADDR": "10.2.0.7"}).get_data(as_text=True)
    assert "Bob &lt;script" in kiosk and "Bob" not in other


# --- admin ------------------------------------------------------------------------------------


def test_admin_lock_unlock_approve_assign_and_tokens(client, sm):
    login(client, "cora")
    token = csrf(client, "/admin/")
    assert client.post("/admin/tools/laser-1/lock", data={"csrf_token": token}).status_code == 302
    with sm() as s:
        assert s.get(Tool, "laser-1").locked
    assert 'class="tool state-locked" id="tool-laser-1"' in client.get("/").get_data(as_text=True)
    client.post("/admin/tools/laser-1/unlock", data={"csrf_token": token})
    client.post("/admin/devices/mystery/approve", data={"csrf_token": token})
    r = client.post(
        "/admin/badges/assign",
        data={"assign-csrf_token": token, "assign-reader": "desk-reader", "assign-member": "bob"},
    )
    assert r.status_code == 302
    r = client.post(
        "/admin/members/secret",
        data={
            "secret-csrf_token": token,
            "secret-member": "bob",
            "secret-kind": "pin",
            "secret-secret": "135790",
        },
    )
    assert r.status_code == 302
    page = client.post(
        "/admin/tokens",
        data={
            "token-csrf_token": token,
            "token-name": "grafana",
            "token-role": "coordinator",
            "token-member": "",
        },
    )
    text = page.get_data(as_text=True)
    new = re.search(r'<code class="token">(psk_[^<]+)</code>', text).group(1)
    with sm() as s:
        assert not s.get(Tool, "laser-1").locked
        assert s.get(Device, "mystery").approval == "approved"
        assert s.get(Badge, "0A0B0C0D").member.handle == "bob"
        row = s.scalar(select(ApiToken).where(ApiToken.name == "grafana"))
        assert row.token_hash != new and new not in row.token_hash
    assert client.get("/admin/").get_data(as_text=True).count(new) == 0  # shown once
    api = client.application.test_client()
    bearer = {"Authorization": f"Bearer {new}"}
    assert api.get("/api/v1/sessions", headers=bearer).status_code == 200
    client.post(f"/admin/tokens/{row.id}/revoke", data={"csrf_token": token})
    assert api.get("/api/v1/sessions", headers=bearer).status_code == 401


# --- JSON API ----------------------------------------------------------------------------------


def test_api_public_reads(as_role):
    role, client = as_role
    hub = client.get("/api/v1/hub").get_json()
    assert hub["live"] is False and hub["version"]
    tools = {t["id"]: t for t in client.get("/api/v1/tools").get_json()["tools"]}
    assert tools["laser-1"]["state"] == "in_use" and tools["lathe"]["state"] == "locked"
    assert tools["laser-1"]["member"] == (None if role == "anonymous" else "Bob " + EVIL)
    devices = {d["id"]: d for d in client.get("/api/v1/devices").get_json()["devices"]}
    assert devices["laser-node"]["fw"] == "1.4.2" and devices["mystery"]["approval"] == "pending"


def test_api_personal_reads_by_role(as_role):
    role, client = as_role
    presence = client.get("/api/v1/presence")
    sessions = client.get("/api/v1/sessions")
    effort = client.get("/api/v1/effort")
    if role == "anonymous":
        for r in (presence, sessions, effort):
            assert r.status_code == 401
            assert r.get_json()["error"]["code"] == "unauthorized"
        return
    assert presence.get_json()["present"][0]["member"] == "bob"
    members = {s["member"] for s in sessions.get_json()["sessions"]}
    efforts = {e["member"] for e in effort.get_json()["effort"]}
    if role == "coordinator":
        assert members == {"ada", "bob"} and efforts == {"ada", "bob"}
        only_ada = client.get("/api/v1/sessions?member=ada").get_json()["sessions"]
        assert [s["close_reason"] for s in only_ada] == ["tap_out"]
    else:
        me = ROLE_LOGINS[role]
        assert members == {me} and efforts == {me}
        assert client.get("/api/v1/sessions?member=cora").status_code == 403


def test_api_filters_and_errors(client, sm):
    with sm.begin() as s:
        s.add(Period(id=7, start=T0 - timedelta(days=1), end=T0 + timedelta(days=6)))
        s.add(Period(id=8, start=T0 + timedelta(days=6), end=T0 + timedelta(days=13)))
    login(client, "cora")
    in_period = client.get("/api/v1/effort?period=7").get_json()["effort"]
    assert {e["member"] for e in in_period} == {"ada", "bob"}
    assert client.get("/api/v1/effort?period=8").get_json() == {"effort": []}
    since = (T0 - timedelta(hours=1)).isoformat()
    recent = client.get("/api/v1/sessions", query_string={"since": since}).get_json()["sessions"]
    assert [s["member"] for s in recent] == ["bob"]
    until = client.get("/api/v1/sessions", query_string={"until": since}).get_json()["sessions"]
    assert [s["member"] for s in until] == ["ada"]
    assert client.get("/api/v1/sessions?tool=lathe").get_json() == {"sessions": []}
    bad = client.get("/api/v1/sessions?since=yesterday")
    assert bad.status_code == 400 and "since" in bad.get_json()["error"]["message"]
    assert client.get("/api/v1/sessions?limit=0").status_code == 400
    ada = client.get("/api/v1/effort?member=ada").get_json()["effort"][0]
    assert ada["hours"] == 0.5 and ada["weighted_hours"] == 0.75 and ada["task"] == "empty-dust"
    assert client.get("/api/v1/effort?period=1").status_code == 404
    assert client.get("/api/v1/effort?period=x").status_code == 400
    assert client.get("/api/v1/effort?period=%C2%B2").status_code == 400  # "²"
    missing = client.get("/api/v1/nothing")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"


def test_ids_and_text_no_database_can_hold_are_refused_alike_on_both(client):
    # PostgreSQL's INTEGER is 32 bits and its text holds no U+0000: both were 500s there
    form = client.post(
        "/login", data={"csrf_token": csrf(client), "handle": "a\x00", "password": "x"}
    )
    assert form.status_code == 400 and "NUL" in form.get_data(as_text=True)
    login(client, "cora")
    for path in ("/api/v1/periods/2147483648/allocations", "/periods/2147483648"):
        assert client.get(path).status_code == 404, path
    assert client.get("/api/v1/effort?period=2147483648").status_code == 404
    nul = client.get("/api/v1/sessions", query_string={"member": "\x00"})
    assert nul.status_code == 400 and "NUL" in nul.get_json()["error"]["message"]
    assert client.post("/api/v1/tasks/a%00b/want").status_code == 400


def test_api_tokens_by_role(client, sm):
    with sm.begin() as s:
        coordinator = create_token(s, "script", "coordinator")
        member = create_token(s, "ada's phone", "member", "ada")
    r = client.get("/api/v1/sessions", headers={"Authorization": f"Bearer {coordinator}"})
    assert {s["member"] for s in r.get_json()["sessions"]} == {"ada", "bob"}
    r = client.get("/api/v1/sessions", headers={"Authorization": f"Bearer {member}"})
    assert {s["member"] for s in r.get_json()["sessions"]} == {"ada"}
    r = client.get("/api/v1/sessions", headers={"Authorization": "Bearer psk_wrong"})
    assert r.status_code == 401
    assert client.get("/admin/", headers={"Authorization": f"Bearer {member}"}).status_code == 403


def test_stream_needs_a_live_hub(client):
    r = client.get("/api/v1/stream")
    assert r.status_code == 503 and r.get_json()["error"]["code"] == "service_unavailable"


def test_metrics_healthz_and_openapi(client):
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    text = metrics.get_data(as_text=True)
    assert "peershop_sessions_open 1.0" in text and "peershop_devices_online 2.0" in text
    health = client.get("/healthz")
    assert health.status_code == 200 and health.get_json()["status"] == "ok"
    doc = client.get("/api/v1/openapi.json").get_json()
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) == {
        "/api/v1/hub",
        "/api/v1/tools",
        "/api/v1/devices",
        "/api/v1/presence",
        "/api/v1/sessions",
        "/api/v1/effort",
        "/api/v1/tasks",
        "/api/v1/tasks/{task_id}/claim",
        "/api/v1/tasks/{task_id}/done",
        "/api/v1/tasks/{task_id}/confirm",
        "/api/v1/tasks/{task_id}/reject",
        "/api/v1/tasks/{task_id}/want",
        "/api/v1/periods",
        "/api/v1/periods/{period_id}/allocations",
        "/api/v1/stream",
        "/api/v1/openapi.json",
        "/metrics",
        "/healthz",
    }
    # Flask writes a path parameter <int:period_id>, OpenAPI {period_id}.
    rules = {
        re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", r.rule)
        for r in client.application.url_map.iter_rules()
    }
    assert {p for p in rules if p.startswith("/api/")} == {
        p for p in doc["paths"] if p.startswith("/api/")
    }


def test_static_assets_are_vendored(client):
    for path in ("/static/floor.js", "/static/peershop.css"):
        with client.get(path) as response:
            assert response.status_code == 200
