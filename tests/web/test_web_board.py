"""Tasks, Period and Me (balances, reservations) pages and their JSON API, per role."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from hub.config import load_config
from hub.ledger import taskboard
from hub.ledger.closing import close_period
from hub.store.models import EffortRecord, Period, PresenceChange, SlotReservation, TaskState, Tool
from tests.web import test_web_app as base
from tests.web.test_web_app import EVIL, T0, csrf, login
from web.auth import create_token

# the role fixtures of the base web tests, shared (pytest finds them by name here)
app, as_role, client, sm = base.app, base.as_role, base.client, base.sm
fast_hashes = base.fast_hashes

CFG = load_config(env={}, search=())
SCARCE = {"slots": "Mon-Sun 18:00-21:00", "per_slot": 3600}


def close_a_period(sm: Any) -> int:
    """A period from a day before the seeded effort up to now, closed now."""
    now = datetime.now(UTC)
    with sm.begin() as s:
        s.add(Period(start=T0 - timedelta(days=1), end=now + timedelta(days=6)))
    with sm.begin() as s:
        (closed,) = close_period(s, CFG, now)
        return closed.period_id


def board_order(page: str) -> list[str]:
    return re.findall(r'<tr class="task[^"]*" id="task-[^"]+" data-task="([^"]+)"', page)


def form_token(page: str, action: str) -> str:
    """The CSRF token of the form that posts to ``action``."""
    start = page.index(f'action="{action}"')
    match = re.search(r'name="(?:\w+-)?csrf_token" type="hidden" value="([^"]+)"', page[start:])
    assert match, action
    return match.group(1)


def post_form(client: Any, page_path: str, action: str, **data: Any) -> Any:
    page = client.get(page_path).get_data(as_text=True)
    data.setdefault("csrf_token", form_token(page, action))
    return client.post(action, data=data)


# --- roles ------------------------------------------------------------------------------------


def test_new_pages_and_endpoints_by_role(as_role, sm):
    role, client = as_role
    period_id = close_a_period(sm)
    pages = ["/tasks", "/periods", f"/periods/{period_id}"]
    reads = ["/api/v1/tasks", "/api/v1/periods", f"/api/v1/periods/{period_id}/allocations"]
    if role == "anonymous":
        for path in pages:
            response = client.get(path)
            assert response.status_code == 302 and "/login" in response.location, path
        for path in reads:
            response = client.get(path)
            assert response.status_code == 401, path
            assert response.get_json()["error"]["code"] == "unauthorized"
        for action in ("claim", "done", "want"):
            assert client.post(f"/api/v1/tasks/sweep/{action}").status_code == 401
        return
    for path in pages + reads:
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["Cache-Control"] == "no-store"
    page = client.get("/tasks").get_data(as_text=True)
    assert "Sweep the floor" in page and "Empty the dust extractor" in page
    assert ('action="/periods/close"' in client.get("/periods").get_data(as_text=True)) == (
        role == "coordinator"
    )
    assert ("/pin" in page) == (role == "coordinator")


def test_member_sees_own_balance_line_and_totals_coordinator_sees_all(client, sm):
    period_id = close_a_period(sm)
    login(client, "bob")
    page = client.get(f"/periods/{period_id}").get_data(as_text=True)
    assert re.findall(r'data-member="([^"]+)"', page) == ["bob"]
    assert "All members" in page
    body = client.get(f"/api/v1/periods/{period_id}/allocations").get_json()
    commons = body["projects"]["commons"]
    assert list(commons["members"]) == ["bob"]
    assert commons["totals"]["credited"] == pytest.approx(1 * 1 + 0.5 * 1.5)
    assert commons["totals"]["balance"] == pytest.approx(0)  # Σ balance = 0
    client.post("/logout", data={"csrf_token": csrf(client, "/me")})

    login(client, "cora")
    page = client.get(f"/periods/{period_id}").get_data(as_text=True)
    assert set(re.findall(r'data-member="([^"]+)"', page)) >= {"ada", "bob"}
    body = client.get(f"/api/v1/periods/{period_id}/allocations").get_json()
    members = body["projects"]["commons"]["members"]
    assert {"ada", "bob"} <= set(members)
    assert sum(m["balance"] for m in members.values()) == pytest.approx(0)
    assert body["closed_at"] is not None
    listed = client.get("/api/v1/periods").get_json()["periods"]
    assert period_id in [p["id"] for p in listed]


def test_period_page_shows_charts_reservations_and_unit_costs(client, sm):
    with sm.begin() as s:
        s.get(Tool, "laser-1").scarce = SCARCE
    period_id = close_a_period(sm)
    with sm.begin() as s:
        s.add(
            SlotReservation(
                tool_id="laser-1",
                member="bob",
                start=T0,
                end=T0 + timedelta(hours=1),
                max=Decimal(2),
                created_at=T0 - timedelta(days=1),
                period_id=period_id,
                outcome="won",
                multiplier=Decimal(1),
                cleared_at=T0 - timedelta(hours=1),
            )
        )
    login(client, "cora")
    page = client.get(f"/periods/{period_id}").get_data(as_text=True)
    assert '<svg class="chart columns"' in page  # tool use per day
    assert '<svg class="chart bars"' in page  # effort per project
    assert "Unit costs" in page and "laser-1" in page
    assert "bob ≤ 2" in page  # coordinators see the bids
    assert "<script>" not in page
    client.post("/logout", data={"csrf_token": csrf(client, "/me")})
    login(client, "ada")
    page = client.get(f"/periods/{period_id}").get_data(as_text=True)
    assert "bob ≤ 2" not in page  # a member sees the clearing, not others' bids


def test_coordinator_closes_the_period_now_after_confirming(client, sm):
    with sm.begin() as s:
        s.add(Period(start=T0 - timedelta(days=1), end=datetime.now(UTC) + timedelta(days=6)))
    login(client, "bob")
    token = csrf(client, "/tasks")
    response = client.post("/periods/close", data={"confirm": "y", "csrf_token": token})
    assert response.status_code == 403
    client.post("/logout", data={"csrf_token": csrf(client, "/me")})
    login(client, "cora")
    # without the tick nothing closes
    response = post_form(client, "/periods", "/periods/close")
    assert response.status_code == 302
    with sm() as s:
        assert s.scalar(select(Period).where(Period.closed_at.is_not(None))) is None
    response = post_form(client, "/periods", "/periods/close", confirm="y")
    assert response.status_code == 302
    with sm() as s:
        closed = s.scalar(select(Period).where(Period.closed_at.is_not(None)))
        assert closed is not None
    assert response.location.endswith(f"/periods/{closed.id}")
    assert "closed" in client.get(response.location).get_data(as_text=True)


def test_a_period_that_just_began_is_not_closed_from_the_page(client, sm):
    """Issue 13, item 16: a second click (or a second coordinator) right after a close
    would close a period of seconds; the page refuses and says why."""
    now = datetime.now(UTC)
    with sm.begin() as s:  # the period a close a minute ago began
        s.add(Period(start=now - timedelta(minutes=1), end=now + timedelta(days=6)))
    login(client, "cora")
    response = post_form(client, "/periods", "/periods/close", confirm="y")
    assert response.status_code == 302
    assert "period.min_length" in client.get("/periods").get_data(as_text=True)
    with sm() as s:
        assert s.scalar(select(Period).where(Period.closed_at.is_not(None))) is None


# --- the board ---------------------------------------------------------------------------------


def test_board_page_follows_board_order_and_wants_move_a_task_up(client, sm):
    login(client, "bob")
    with sm.begin() as s:
        expected = [e.task for e in taskboard.board(s, datetime.now(UTC), CFG)]
    assert board_order(client.get("/tasks").get_data(as_text=True)) == expected
    assert expected[0] == "empty-dust"  # the heaviest (weight 1.5)
    assert post_form(client, "/tasks", "/tasks/sweep/want").status_code == 302
    login(client, "ada")
    assert post_form(client, "/tasks", "/tasks/sweep/want").status_code == 302
    order = board_order(client.get("/tasks").get_data(as_text=True))
    assert order[0] == "sweep"  # 1 * (1 + 2 wants) = 3 > 1.5
    with sm.begin() as s:
        assert order == [e.task for e in taskboard.board(s, datetime.now(UTC), CFG)]


def test_claim_then_done_credits_the_weight_claimed_at(client, sm):
    login(client, "bob")
    assert post_form(client, "/tasks", "/tasks/sweep/claim").status_code == 302
    page = client.get("/tasks").get_data(as_text=True)
    assert "claimed by bob" in page and 'name="done-hours" value="1"' in page
    # the coordinator re-weights the task after the claim
    with sm.begin() as s:
        taskboard.pin(s, "sweep", Decimal("2.5"))
    response = post_form(client, "/tasks", "/tasks/sweep/done", **{"done-hours": "1.5"})
    assert response.status_code == 302
    with sm() as s:
        record = s.scalar(select(EffortRecord).where(EffortRecord.source == "board"))
        assert (record.member, record.task_id) == ("bob", "sweep")
        assert (record.hours, record.weight) == (Decimal("1.5"), Decimal(1))
    # bob's effort shows on Me
    assert "board" in client.get("/me").get_data(as_text=True)


def test_refused_board_actions_are_flashed_not_errors(client):
    login(client, "bob")
    token = csrf(client, "/tasks")
    response = client.post("/tasks/sweep/done", data={"done-hours": "1", "csrf_token": token})
    assert response.status_code == 302
    assert "claim it first" in client.get("/tasks").get_data(as_text=True)
    assert client.post("/tasks/nope/claim", data={"csrf_token": token}).status_code == 404


def test_propose_open_pin_unpin_retire(client, sm):
    login(client, "bob")
    response = post_form(
        client,
        "/tasks",
        "/tasks/propose",
        **{
            "propose-title": "Oil " + EVIL,
            "propose-project": "commons",
            "propose-hours": "1.5",
            "propose-slots": "2",
        },
    )
    assert response.status_code == 302
    page = client.get("/tasks").get_data(as_text=True)
    assert "Oil &lt;script&gt;" in page and EVIL not in page
    with sm() as s:
        (task_id,) = s.scalars(
            select(TaskState.task_id).where(TaskState.status == "proposed")
        ).all()
    assert task_id not in board_order(page)
    assert client.post(f"/tasks/{task_id}/status/open", data={}).status_code in (400, 403)
    bad = post_form(
        client, "/tasks", "/tasks/propose", **{"propose-title": "", "propose-hours": "0"}
    )
    assert bad.status_code == 400
    client.post("/logout", data={"csrf_token": csrf(client, "/me")})

    login(client, "cora")
    assert post_form(client, "/tasks", f"/tasks/{task_id}/status/open").status_code == 302
    assert task_id in board_order(client.get("/tasks").get_data(as_text=True))
    response = post_form(client, "/tasks", f"/tasks/{task_id}/pin", **{"pin-weight": "3"})
    assert response.status_code == 302
    with sm() as s:
        entry = next(e for e in taskboard.board(s, datetime.now(UTC), CFG) if e.task == task_id)
        assert entry.pinned and entry.weight == Decimal(3)
    response = post_form(client, "/tasks", f"/tasks/{task_id}/pin", **{"pin-weight": "99"})
    assert "between" in client.get("/tasks").get_data(as_text=True) or response.status_code == 302
    assert post_form(client, "/tasks", f"/tasks/{task_id}/unpin").status_code == 302
    assert post_form(client, "/tasks", f"/tasks/{task_id}/status/retired").status_code == 302
    assert task_id not in board_order(client.get("/tasks").get_data(as_text=True))


def test_script_tag_in_a_task_title_is_escaped(client):
    login(client, "cora")
    page = client.get("/tasks").get_data(as_text=True)
    assert "Fix &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert EVIL not in page
    assert "<title>weight of Fix &lt;script&gt;" in page  # inside the chart too
    # JSON carries the title as data, served as application/json with nosniff
    response = client.get("/api/v1/tasks")
    assert response.mimetype == "application/json"
    assert "Fix " + EVIL in [t["title"] for t in response.get_json()["tasks"]]


def test_csrf_is_required_on_the_new_forms(client, sm):
    with sm.begin() as s:
        s.get(Tool, "laser-1").scarce = SCARCE
        s.add(
            SlotReservation(
                tool_id="laser-1",
                member="cora",
                start=T0 + timedelta(days=3),
                end=T0 + timedelta(days=3, hours=1),
                max=Decimal(1),
                created_at=T0,
            )
        )
    login(client, "cora")
    for path in (
        "/tasks/sweep/want",
        "/tasks/sweep/unwant",
        "/tasks/sweep/claim",
        "/tasks/sweep/unclaim",
        "/tasks/sweep/done",
        "/tasks/propose",
        "/tasks/sweep/pin",
        "/tasks/sweep/unpin",
        "/tasks/sweep/status/retired",
        "/tasks/sweep/claims/1/confirm",
        "/tasks/sweep/claims/1/reject",
        "/periods/close",
        "/me/reservations",
        "/me/reservations/1/cancel",
    ):
        assert client.post(path, data={}).status_code == 400, path
    # the JSON API from a browser session needs the token too (a bearer token does not)
    response = client.post("/api/v1/tasks/sweep/claim")
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "csrf"
    token = csrf(client, "/tasks")
    response = client.post("/api/v1/tasks/sweep/claim", headers={"X-CSRFToken": token})
    assert response.status_code == 201
    with sm() as s:
        assert s.scalar(select(SlotReservation.id)) == 1  # not cancelled


# --- the JSON API -------------------------------------------------------------------------------


def test_api_claim_done_want_with_a_member_token(client, sm):
    with sm.begin() as s:
        ada = {"Authorization": "Bearer " + create_token(s, "ada", "member", "ada")}
        coord = {"Authorization": "Bearer " + create_token(s, "c", "coordinator")}
    tasks = client.get("/api/v1/tasks", headers=ada).get_json()["tasks"]
    assert tasks[0]["id"] == "empty-dust" and tasks[0]["weight"] == 1.5
    response = client.post("/api/v1/tasks/empty-dust/claim", headers=ada)
    assert response.status_code == 201
    assert response.get_json()["claim"]["weight"] == 1.5
    again = client.post("/api/v1/tasks/empty-dust/claim", headers=ada)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "conflict"
    with sm.begin() as s:
        taskboard.pin(s, "empty-dust", Decimal(3))
    bad = client.post("/api/v1/tasks/empty-dust/done", headers=ada, json={"hours": -1})
    assert bad.status_code == 400
    bad = client.post("/api/v1/tasks/empty-dust/done", headers=ada, json=[1])
    assert bad.status_code == 400
    response = client.post("/api/v1/tasks/empty-dust/done", headers=ada, json={})
    assert response.status_code == 201
    effort = response.get_json()["effort"]
    assert (effort["hours"], effort["weight"], effort["weighted_hours"]) == (0.5, 1.5, 0.75)
    assert effort["source"] == "board" and effort["member"] == "ada"
    assert client.post("/api/v1/tasks/sweep/claim", headers=ada).status_code == 201
    response = client.post("/api/v1/tasks/sweep/done", headers=ada, json={"hours": 0.75})
    assert response.status_code == 201 and response.get_json()["effort"]["hours"] == 0.75
    with sm() as s:
        q = select(EffortRecord).where(
            EffortRecord.task_id == "sweep", EffortRecord.source == "board"
        )
        record = s.scalar(q)
        assert record.hours == Decimal("0.75")  # exact, from the float's shortest repr
    assert client.post("/api/v1/tasks/sweep/want", headers=ada).get_json()["new"] is True
    assert client.post("/api/v1/tasks/sweep/want", headers=ada).get_json()["new"] is False
    assert client.post("/api/v1/tasks/nope/want", headers=ada).status_code == 404
    refused = client.post("/api/v1/tasks/sweep/claim", headers=coord)
    assert refused.status_code == 403  # a coordinator token is nobody's
    assert client.get("/api/v1/periods/999/allocations", headers=ada).status_code == 404
    assert client.get("/api/v1/periods?limit=0", headers=ada).status_code == 400


def test_a_big_claim_waits_for_a_confirmation_in_the_api(client, sm):
    """Issue 13, item 4: a done above 1.5 x the posted hours says it is pending, counts
    the posted hours, and only a coordinator or someone who was there confirms it."""
    with sm.begin() as s:
        ada = {"Authorization": "Bearer " + create_token(s, "ada", "member", "ada")}
        bob = {"Authorization": "Bearer " + create_token(s, "bob", "member", "bob")}
        cora = {"Authorization": "Bearer " + create_token(s, "cora", "coordinator", "cora")}
    assert client.post("/api/v1/tasks/sweep/claim", headers=ada).status_code == 201
    response = client.post("/api/v1/tasks/sweep/done", headers=ada, json={"hours": 8})
    assert response.status_code == 201
    body = response.get_json()
    assert body["effort"]["hours"] == 1  # the posted hours count now
    claim = body["claim"]
    assert (claim["status"], claim["hours"], claim["credited_hours"]) == ("pending", 8, 1)
    assert claim["confirmations_needed"] == 1 and claim["confirmed_by"] == []

    def pending(headers: dict[str, str]) -> list[tuple[Any, ...]]:
        rows = client.get("/api/v1/tasks", headers=headers).get_json()["pending"]
        return [(p["id"], p["member"], p["status"], p["can_confirm"]) for p in rows]

    # Bob is signed in, but Ada never was: nobody saw the work but a coordinator
    assert pending(bob) == [(claim["id"], "ada", "pending", False)]
    assert pending(ada) == [(claim["id"], "ada", "pending", False)]
    assert pending(cora) == [(claim["id"], "ada", "pending", True)]
    url = "/api/v1/tasks/sweep/confirm"
    for who, status in ((bob, 403), (ada, 403)):
        refused = client.post(url, headers=who, json={"claim": claim["id"]})
        assert refused.status_code == status and refused.get_json()["error"]["code"] == "forbidden"
    for bad in ({}, {"claim": "1"}, {"claim": True}, [claim["id"]], {"claim": 0}):
        assert client.post(url, headers=cora, json=bad).status_code == 400, bad
    missing = client.post(
        "/api/v1/tasks/empty-dust/confirm", headers=cora, json={"claim": claim["id"]}
    )
    assert missing.status_code == 404  # not a claim of that task
    assert (
        client.post("/api/v1/tasks/sweep/reject", headers=bob, json={"claim": claim["id"]})
    ).status_code == 403  # coordinators reject
    response = client.post(url, headers=cora, json={"claim": claim["id"]})
    assert response.status_code == 200
    done = response.get_json()["claim"]
    assert (done["status"], done["credited_hours"], done["confirmed_by"]) == (
        "confirmed",
        8,
        ["cora"],
    )
    assert pending(cora) == []
    again = client.post(url, headers=cora, json={"claim": claim["id"]})
    assert again.status_code == 409  # nothing waits any more
    with sm() as s:
        hours = s.scalars(
            select(EffortRecord.hours)
            .where(EffortRecord.source == "board", EffortRecord.task_id == "sweep")
            .order_by(EffortRecord.id)
        ).all()
    assert hours == [Decimal(1), Decimal(7)]  # the done, then the rest at the confirmation


def test_the_board_shows_a_pending_claim_with_buttons_for_who_may_confirm(client, sm):
    now = datetime.now(UTC)
    with sm.begin() as s:
        s.add(PresenceChange(member="ada", at=now - timedelta(minutes=10), state="in", reason="b"))
        taskboard.claim(s, "ada", "empty-dust", now - timedelta(minutes=5), CFG)
        record = taskboard.done(s, "ada", "empty-dust", now, hours="4", cfg=CFG)
        claim_id = taskboard.claim_of(s, record).id
    action = f"/tasks/empty-dust/claims/{claim_id}"

    login(client, "bob")  # signed in since before Ada came: he was there
    page = client.get("/tasks").get_data(as_text=True)
    assert "pending confirmation" in page and f'id="claim-{claim_id}"' in page
    assert f'action="{action}/confirm"' in page and f'action="{action}/reject"' not in page
    client.post("/logout", data={"csrf_token": csrf(client, "/me")})

    login(client, "ada")  # her own claim: no button
    page = client.get("/tasks").get_data(as_text=True)
    assert "pending confirmation" in page and f"{action}/confirm" not in page
    client.post("/logout", data={"csrf_token": csrf(client, "/me")})

    login(client, "cora")  # a coordinator: confirm or reject
    page = client.get("/tasks").get_data(as_text=True)
    assert f'action="{action}/confirm"' in page and f'action="{action}/reject"' in page
    assert post_form(client, "/tasks", f"{action}/reject").status_code == 302
    page = client.get("/tasks").get_data(as_text=True)
    assert "Rejected" in page and f'id="claim-{claim_id}"' not in page
    with sm() as s:
        assert taskboard.claim_view(s, claim_id).status == taskboard.ClaimStatus.REJECTED


# --- Me -------------------------------------------------------------------------------------------


def next_slot(days: int = 3) -> datetime:
    day = (datetime.now(UTC) + timedelta(days=days)).date()
    return datetime(day.year, day.month, day.day, 19, 0)


def test_me_shows_balance_per_period_and_reserves_and_cancels_a_slot(client, sm):
    with sm.begin() as s:
        s.get(Tool, "laser-1").scarce = SCARCE
    period_id = close_a_period(sm)
    login(client, "ada")
    page = client.get("/me").get_data(as_text=True)
    assert f'href="/periods/{period_id}"' in page and '<svg class="chart bars"' in page
    start = next_slot()
    response = post_form(
        client,
        "/me",
        "/me/reservations",
        **{
            "reserve-tool": "laser-1",
            "reserve-start": start.strftime("%Y-%m-%dT%H:%M"),
            "reserve-max": "1.5",
        },
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    with sm() as s:
        r = s.scalar(select(SlotReservation))
        assert (r.member, r.tool_id, r.max) == ("ada", "laser-1", Decimal("1.5"))
        assert r.start == start.replace(tzinfo=UTC)
    assert "open for bids" in client.get("/me").get_data(as_text=True)
    # a multiplier below 1 and a time that starts no slot are refused
    low = post_form(
        client,
        "/me",
        "/me/reservations",
        **{
            "reserve-tool": "laser-1",
            "reserve-start": start.strftime("%Y-%m-%dT%H:%M"),
            "reserve-max": "0.5",
        },
    )
    assert low.status_code == 400
    odd = post_form(
        client,
        "/me",
        "/me/reservations",
        **{
            "reserve-tool": "laser-1",
            "reserve-start": start.strftime("%Y-%m-%dT%H:30"),
            "reserve-max": "2",
        },
    )
    assert odd.status_code == 400 and "does not start a scarce slot" in odd.get_data(as_text=True)
    assert post_form(client, "/me", f"/me/reservations/{r.id}/cancel").status_code == 302
    with sm() as s:
        assert s.scalar(select(SlotReservation)) is None


def test_the_me_page_shows_each_section_once_and_a_plain_title(client, sm):
    with sm.begin() as s:
        s.get(Tool, "laser-1").scarce = SCARCE  # the reserve form appears
    login(client, "ada")
    page = client.get("/me").get_data(as_text=True)
    assert page.count('id="balance"') == 1 and page.count('id="reserve-form"') == 1
    title = page[page.index("<title>") : page.index("</title>")]
    assert "<" not in title[len("<title>") :] and "Me" in title
