"""Admin's tools, policies and trainings pages with Flask's test client, by role."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from flask.testing import FlaskClient
from sqlalchemy import select

from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import Member, Tool, TrainingGrant
from hub.store.shop_store import shop_version
from tests.conftest import database_url
from tests.web.test_web_app import csrf, login
from web import create_app
from web.auth import create_token, set_password, set_pin

EVIL = '<script>alert("x")</script>'
SHOP = f"""
members:
  - {{handle: cora, name: Cora C., roles: [member, coordinator]}}
  - {{handle: ada, name: Ada L., roles: [member, trainer], badges: ["04A1B2C3D4E5F6"]}}
  - {{handle: bob, name: 'Bob {EVIL}', badges: ["0B0B0B0B"]}}
trainings:
  - id: laser
    name: 'Laser {EVIL}'
    granted:
      - {{member: ada, by: cora}}
tools:
  - id: laser-1
    name: 'Laser {EVIL}'
    devices: [laser-node]
    policy: tap
    training: laser
    power: {{off_w: 8, busy_w: 250, idle_timeout: 20m}}
    scarce: {{slots: "Mon-Fri 18:00-21:00"}}
tasks:
  - {{id: sweep, title: Sweep the floor}}
"""
KIOSK_NET = "10.9.0.0/24"


@pytest.fixture(autouse=True)
def fast_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    import web.auth

    monkeypatch.setattr(
        web.auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


@pytest.fixture
def sm(tmp_path: Path):
    engine = make_engine(database_url(tmp_path, "admin.db"))
    migrate(engine)
    factory = session_factory(engine)
    with factory.begin() as s:
        apply_shop(s, parse_shop(SHOP))
        for handle in ("cora", "ada", "bob"):
            member = s.scalar(select(Member).where(Member.handle == handle))
            set_password(s, member, f"{handle}-password")
        set_pin(s, s.scalar(select(Member).where(Member.handle == "bob")), "975310")
    yield factory
    engine.dispose()


@pytest.fixture
def client(sm: Any) -> FlaskClient:
    app = create_app({"SECRET_KEY": "test", "TESTING": True, "KIOSK_NETWORKS": [KIOSK_NET]}, sm=sm)
    return app.test_client()


def as_coordinator(client: FlaskClient) -> str:
    login(client, "cora", "cora-password")
    return csrf(client, "/admin/tools/laser-1")


TOOL_FORM = {
    "policy": "tap",
    "training": "laser",
    "off_w": "8",
    "idle_w": "",
    "busy_w": "250",
    "hysteresis_w": "0",
    "idle_timeout": "20m",
    "max_duration": "12h",
    "hours": "",
    "enforce": "y",
}


def post_tool(client: FlaskClient, token: str, **changes: str) -> Any:
    return client.post("/admin/tools/laser-1", data={**TOOL_FORM, **changes, "csrf_token": token})


# (method, path, form, what a coordinator gets: the end of a setting that is not
# overridden is a 404; the release follows the revoke, which marks ada's grant)
ROUTES = [
    ("GET", "/admin/tools/laser-1", {}, 200),
    ("POST", "/admin/tools/laser-1", TOOL_FORM, 302),
    ("POST", "/admin/tools/laser-1/overrides/policy/end", {}, 404),
    ("GET", "/admin/trainings", {}, 200),
    ("POST", "/admin/trainings/grant", {"grant-training": "laser", "grant-member": "bob"}, 302),
    ("POST", "/admin/trainings/laser/ada/revoke", {}, 302),
    ("POST", "/admin/trainings/laser/ada/release", {}, 302),
]


def login_as(client: FlaskClient, sm: Any, role: str) -> dict[str, Any]:
    """Log ``client`` in as ``role``; returns extra request arguments (headers, address)."""
    if role == "member":
        login(client, "bob", "bob-password")
    elif role == "trainer":
        login(client, "ada", "ada-password")
    elif role == "kiosk_pin":
        token = csrf(client)
        r = client.post(
            "/login/kiosk", data={"badge": "0b0b0b0b", "pin": "975310", "csrf_token": token}
        )
        assert r.status_code == 302
    elif role == "kiosk_network":
        return {"environ_base": {"REMOTE_ADDR": "10.9.0.7"}}
    elif role == "member_token":
        with sm.begin() as s:
            token = create_token(s, "phone", "member", "bob")
        return {"headers": {"Authorization": f"Bearer {token}"}}
    elif role == "coordinator":
        login(client, "cora", "cora-password")
    return {}


@pytest.mark.parametrize(
    "role",
    ["anonymous", "kiosk_network", "member", "trainer", "kiosk_pin", "member_token", "coordinator"],
)
def test_every_new_route_by_role(client, sm, role):
    extra = login_as(client, sm, role)
    token = csrf(client)  # the session's token, valid on every form
    for method, path, data, status in ROUTES:
        if method == "GET":
            r = client.get(path, **extra)
        else:
            tokens = {"csrf_token": token, "grant-csrf_token": token}
            r = client.post(path, data={**data, **tokens}, **extra)
        where = f"{role} {method} {path}"
        if role in ("anonymous", "kiosk_network"):
            assert r.status_code == 302 and "/login" in r.headers["Location"], where
        elif role != "coordinator":
            assert r.status_code == 403, where
        else:
            assert r.status_code == status, where
            if status == 302:
                assert "/login" not in r.headers["Location"], where
    with sm() as s:
        grants = {
            (g.training_id, g.member_id, g.expires_at is None)
            for g in s.scalars(select(TrainingGrant))
        }
        ada = s.scalar(select(Member).where(Member.handle == "ada"))
    if role != "coordinator":  # nobody else changed anything
        assert grants == {("laser", ada.id, True)}
    else:
        assert len(grants) == 2 and ("laser", ada.id, False) in grants  # bob's; ada's ended


def test_admin_links_tools_trainings_tasks_and_the_period_close(client):
    login(client, "cora", "cora-password")
    page = client.get("/admin/").get_data(as_text=True)
    assert 'href="/admin/tools/laser-1"' in page and 'href="/admin/trainings"' in page
    section = page[page.index('id="tasks-periods"') :]
    section = section[: section.index("</section>")]
    assert "pin or unpin a task" in section and "Close period now" in section
    links = re.findall(r'href="([^"]+)"', section)
    assert len(links) == 2
    pages = [client.get(link, follow_redirects=True).get_data(as_text=True) for link in links]
    assert '<button type="submit">Pin</button>' in pages[0]  # a coordinator pins weights
    assert "Close period now" in pages[1]


def test_edit_a_tools_policy_and_see_it_kept_over_the_file(client, sm, caplog):
    token = as_coordinator(client)
    with sm() as s:
        version = shop_version(s)
    with caplog.at_level(logging.INFO, logger="peershop.audit"):
        r = post_tool(client, token, policy="timeout", idle_timeout="5m", hours="Sat 10:00-18:00")
    assert r.status_code == 302
    assert [rec.getMessage() for rec in caplog.records if rec.name == "peershop.audit"] == [
        "admin @cora: ~ tool laser-1: policy tap -> timeout",
        "admin @cora: ~ tool laser-1: power.idle_timeout 20m -> 5m",
        "admin @cora: ~ tool laser-1: hours none -> 'Sat 10:00-18:00'",
    ]
    with sm() as s:
        tool = s.get(Tool, "laser-1")
        assert (tool.policy, tool.power["idle_timeout"], tool.options["hours"]) == (
            "timeout",
            300,
            "Sat 10:00-18:00",
        )
        assert set(tool.options["overrides"]) == {"policy", "power.idle_timeout", "hours"}
        assert shop_version(s) == version + 1
    page = client.get("/admin/tools/laser-1").get_data(as_text=True)
    assert 'id="overrides"' in page and "@cora at " in page
    assert re.search(r"<td>policy</td><td>timeout</td><td>tap</td>", page)
    assert "<script>alert" not in page and "Laser &lt;script&gt;" in page
    with sm.begin() as s:
        kept = apply_shop(s, parse_shop(SHOP))
    assert all(line.startswith("! tool laser-1:") for line in kept) and len(kept) == 3
    # give the policy back to the file: it is tap again at once
    with caplog.at_level(logging.INFO, logger="peershop.audit"):
        r = client.post("/admin/tools/laser-1/overrides/policy/end", data={"csrf_token": token})
    assert r.status_code == 302
    assert "admin @cora: ~ tool laser-1: policy timeout -> tap" in caplog.messages
    with sm() as s:
        assert s.get(Tool, "laser-1").policy == "tap"
    assert (
        client.post(
            "/admin/tools/laser-1/overrides/policy/end", data={"csrf_token": token}
        ).status_code
        == 404
    )


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"policy": "timeout", "idle_timeout": ""}, "policy", "policy timeout needs"),
        ({"off_w": "ten"}, "off_w", "power.off_w must be a number, not &#39;ten&#39;"),
        ({"off_w": "-3"}, "off_w", "power.off_w must not be negative"),
        ({"idle_timeout": "soon"}, "idle_timeout", "is not a duration"),
        ({"max_duration": "0"}, "max_duration", "a duration must be positive"),
        ({"hours": "Mon 25:00-26:00"}, "hours", "25:00"),
        ({"hours": EVIL}, "hours", "hours:"),
        ({"training": "welding"}, "training", "unknown training &#39;welding&#39;"),
        ({"policy": EVIL}, "policy", "policy must be one of card_present, tap, timeout"),
        ({"off_w": "300"}, "tool", "power.off_w (300) must not be above power.busy_w (250)"),
        ({"hours": "x" * 201}, "hours", "Field cannot be longer than 200 characters"),
    ],
)
def test_bad_values_are_a_400_naming_the_field(client, sm, changes, field, message):
    token = as_coordinator(client)
    r = post_tool(client, token, **changes)
    page = r.get_data(as_text=True)
    assert r.status_code == 400, page
    errors = re.findall(r'data-field="([^"]+)">([^<]*)<', page)
    assert any(f == field and message in text for f, text in errors), errors
    assert "<script>alert" not in page
    with sm() as s:
        tool = s.get(Tool, "laser-1")
        assert (tool.policy, tool.power["off_w"], "overrides" in tool.options) == ("tap", 8, False)


def test_every_new_form_needs_its_csrf_token(client):
    login(client, "cora", "cora-password")
    for method, path, data, _status in ROUTES:
        if method == "POST":
            assert client.post(path, data=data).status_code == 400, path


def test_grant_renew_revoke_and_release_a_training(client, sm, caplog):
    login(client, "cora", "cora-password")
    token = csrf(client, "/admin/trainings")
    page = client.get("/admin/trainings").get_data(as_text=True)
    assert "Laser &lt;script&gt;" in page and "<script>alert" not in page

    def grant(**data: str) -> Any:
        return client.post("/admin/trainings/grant", data={"grant-csrf_token": token, **data})

    with caplog.at_level(logging.INFO, logger="peershop.audit"):
        assert grant(**{"grant-training": "laser", "grant-member": "bob"}).status_code == 302
        r = grant(
            **{"grant-training": "laser", "grant-member": "bob", "grant-expires": "2031-06-30"}
        )
        assert r.status_code == 302
        r = client.post("/admin/trainings/laser/ada/revoke", data={"csrf_token": token})
        assert r.status_code == 302
    assert caplog.messages[-3:] == [
        "admin @cora: + training grant laser: bob (by cora)",
        "admin @cora: ~ training grant laser: bob: expires none -> 2031-07-01T00:00:00Z",
        "admin @cora: - training grant laser: ada (revoked by cora)",
    ]
    page = client.get("/admin/trainings").get_data(as_text=True)
    rows = dict(re.findall(r'<tr class="holder" data-member="(\w+)">(.*?)</tr>', page, re.S))
    assert "ended" in rows["ada"] and "Revoke" not in rows["ada"]
    assert "until 2031-07-01" in rows["bob"] and "by @cora" in rows["bob"]
    # a load keeps both; releasing ada's gives her grant back to the file at the next load
    with sm.begin() as s:
        kept = apply_shop(s, parse_shop(SHOP))
    assert len(kept) == 1 and kept[0].startswith("! training grant laser: ada: expires ")
    r = client.post("/admin/trainings/laser/ada/release", data={"csrf_token": token})
    assert r.status_code == 302
    with sm.begin() as s:
        assert apply_shop(s, parse_shop(SHOP))[0].startswith(
            "~ training grant laser: ada: expires "
        )
    for path in ("/admin/trainings/laser/ada/release", "/admin/trainings/laser/nobody/revoke"):
        assert client.post(path, data={"csrf_token": token}).status_code == 404, path


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"training": "laser", "member": "bob", "expires": "soon"}, "expires", "give a date"),
        ({"training": "laser", "member": "bob", "expires": "2001-01-01"}, "expires", "future"),
        ({"training": "welding", "member": "bob"}, "training", "unknown training"),
        ({"training": "laser", "member": EVIL}, "member", "unknown member"),
        ({"training": "laser"}, "member", "This field is required."),
    ],
)
def test_bad_grants_are_a_400_naming_the_field(client, sm, data, field, message):
    login(client, "cora", "cora-password")
    token = csrf(client, "/admin/trainings")
    form = {f"grant-{k}": v for k, v in data.items()}
    r = client.post("/admin/trainings/grant", data={"grant-csrf_token": token, **form})
    page = r.get_data(as_text=True)
    assert r.status_code == 400
    errors = re.findall(r'data-field="([^"]+)">([^<]*)<', page)
    assert any(f == f"grant-{field}" and message in text for f, text in errors), errors
    assert "<script>alert" not in page
    with sm() as s:
        assert len(s.scalars(select(TrainingGrant)).all()) == 1


def test_a_coordinator_token_cannot_grant_for_nobody(client, sm):
    with sm.begin() as s:
        bearer = create_token(s, "script", "coordinator")
    client.get("/login")
    token = csrf(client)
    r = client.post(
        "/admin/trainings/laser/ada/revoke",
        data={"csrf_token": token},
        headers={"Authorization": f"Bearer {bearer}"},
    )
    assert r.status_code == 403
