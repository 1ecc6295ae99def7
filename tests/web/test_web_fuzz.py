"""Schemathesis drives every operation of /api/v1/openapi.json: no 500s, no schema drift."""

from __future__ import annotations

import itertools

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import checks  # noqa: E402

from hub.store.db import make_engine, migrate, session_factory  # noqa: E402
from tests.conftest import fresh_database  # noqa: E402
from tests.web.test_web_app import seed  # noqa: E402
from web import create_app  # noqa: E402
from web.auth import create_token  # noqa: E402

EXPECTED = [
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
    "/metrics",
    "/healthz",
]  # schemathesis leaves out the document's own path, /api/v1/openapi.json


def _app(url: str):
    engine = make_engine(url)
    migrate(engine)
    sm = session_factory(engine)
    seed(sm)
    with sm.begin() as session:
        token = create_token(session, "fuzz", "coordinator")
        member_token = create_token(session, "fuzz-bob", "member", "bob")
    app = create_app({"SECRET_KEY": "fuzz"}, sm=sm)
    app.config["MEMBER_TOKEN"] = member_token
    return app, token, engine


@pytest.fixture(scope="module")
def app_and_token(tmp_path_factory):
    with fresh_database(tmp_path_factory.mktemp("fuzz"), "fuzz.db") as url:
        app, token, engine = _app(url)
        yield app, token
        engine.dispose()


def test_no_server_errors_and_responses_match_the_document(app_and_token):
    app, token = app_and_token
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path == "/api/v1/stream":
            continue  # endless by design (and 503 without a hub)

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def check(case):
            response = case.call(headers={"Authorization": f"Bearer {token}"})
            assert response.status_code < 500, (case.path, case.query, response.text[:300])
            # A valid token is sent on purpose (to reach the personal reads), so the check
            # that expects invalid generated auth to be refused does not apply; and a
            # string the document calls "any string" may still be a bad instant (400).
            excluded = [checks.ignored_auth, checks.positive_data_acceptance]
            case.validate_response(response, excluded_checks=excluded)

        check()
        checked.append(operation.path)
    assert sorted(checked) == sorted(EXPECTED), checked


def test_a_member_token_on_the_board_and_periods_finds_no_server_errors(app_and_token):
    """The board's POSTs act as a member: with a member's token they claim, finish and
    want for real (a coordinator token is refused, 403, in the run above)."""
    app, _ = app_and_token
    token = app.config["MEMBER_TOKEN"]
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    checked, calls = [], itertools.count()
    for result in schema.get_all_operations():
        operation = result.ok()
        if not operation.path.startswith(("/api/v1/tasks", "/api/v1/periods")):
            continue

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def check(case):
            if "task_id" in (case.path_parameters or {}) and next(calls) % 2 == 0:
                case.path_parameters["task_id"] = "sweep"  # a real task, half the time
            response = case.call(headers={"Authorization": f"Bearer {token}"})
            assert response.status_code < 500, (case.path, case.body, response.text[:300])
            excluded = [checks.ignored_auth, checks.positive_data_acceptance]
            case.validate_response(response, excluded_checks=excluded)

        check()
        checked.append(operation.path)
    assert len(checked) == 8, checked
