"""The headers HTTP requires on refusals, read by a real HTTP client from the real server.

Every 401 names how to authenticate (``WWW-Authenticate: Bearer realm=...``, RFC 9110
§15.5.2, RFC 6750 §3, with ``error="invalid_token"`` when the token sent is wrong), and
every 405 lists the methods the resource does take (``Allow``, RFC 9110 §15.5.6): for
each route of the JSON API, and for the pages.  docs/http-api.md describes both.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.datastructures import WWWAuthenticate

from tests.helpers import WebClient
from tests.web.test_web_trust import served
from web.auth import create_token

SAMPLES = {"task_id": "sweep", "period_id": "1"}  # values for the routes' path variables
IMPLIED = {"HEAD", "OPTIONS"}  # werkzeug answers these for every GET route itself


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any, Any]]:
    with served(tmp_path_factory.mktemp("headers")) as running:
        yield running


def _path(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: SAMPLES[m.group(1)], rule)


def _api_routes(app: Any) -> dict[str, set[str]]:
    """Each path of the JSON API with the methods it takes (all rules of that path)."""
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            routes.setdefault(_path(rule.rule), set()).update(rule.methods or ())
    return routes


def _declared_401(client: WebClient) -> set[tuple[str, str]]:
    """(method, path) of every operation whose OpenAPI entry may answer 401."""
    doc = client.get("/api/v1/openapi.json").json()
    return {
        (method.upper(), _path(path.replace("{", "<").replace("}", ">")))
        for path, operations in doc["paths"].items()
        for method, operation in operations.items()
        if "401" in operation.get("responses", {})
    }


def test_every_401_of_the_api_carries_a_bearer_challenge(site):
    base, _sm, app = site
    client = WebClient(base)
    refused: set[tuple[str, str]] = set()
    for path, methods in _api_routes(app).items():
        for method in sorted(methods - IMPLIED):
            if (method, path) == ("GET", "/api/v1/stream"):
                continue  # public and endless: it never answers 401
            anonymous = client.request(method, path)
            wrong = client.request(method, path, headers={"Authorization": "Bearer nope"})
            assert anonymous.status == wrong.status, (method, path)
            if anonymous.status != 401:
                continue
            refused.add((method, path))
            assert anonymous.json()["error"]["code"] == "unauthorized"
            challenge = WWWAuthenticate.from_header(anonymous.headers["WWW-Authenticate"])
            assert challenge.type == "bearer", (method, path)
            assert challenge.parameters == {"realm": "peershop"}, (method, path)
            challenge = WWWAuthenticate.from_header(wrong.headers["WWW-Authenticate"])
            assert challenge.type == "bearer", (method, path)
            assert challenge.parameters["realm"] == "peershop"
            assert challenge.parameters["error"] == "invalid_token", (method, path)
    # every operation the API document says needs a login did refuse, and no other did
    assert refused == _declared_401(client)
    assert ("GET", "/api/v1/sessions") in refused


def test_a_refused_login_form_carries_a_challenge_too(site):
    base, _sm, _app = site
    client = WebClient(base)
    answer = client.log_in("ada", "not-her-password")
    assert answer.status == 401
    challenge = WWWAuthenticate.from_header(answer.headers["WWW-Authenticate"])
    assert challenge.type == "bearer"
    assert "error" not in challenge.parameters  # no token was sent


def test_every_405_of_the_api_lists_the_allowed_methods(site):
    base, _sm, app = site
    client = WebClient(base)
    for path, methods in _api_routes(app).items():
        for wrong in sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - methods):
            answer = client.request(wrong, path)
            assert answer.status == 405, (wrong, path)
            allowed = {m.strip() for m in answer.headers["Allow"].split(",")}
            assert allowed == methods, (wrong, path)
            assert answer.json()["error"]["code"] == "method_not_allowed"


def test_a_page_answers_405_with_allow_too(site):
    base, _sm, _app = site
    answer = WebClient(base).request("DELETE", "/login")
    assert answer.status == 405
    assert {m.strip() for m in answer.headers["Allow"].split(",")} == {
        "GET",
        "HEAD",
        "OPTIONS",
        "POST",
    }
    assert "text/html" in answer.headers["Content-Type"]


def test_other_refusals_carry_no_challenge(site):
    """A 403 (logged in, too low a role) is no invitation to authenticate again."""
    base, sm, _app = site
    with sm.begin() as session:
        token = create_token(session, "ada's script", "member", member="ada")
    answer = WebClient(base).request(
        "POST", "/api/v1/tasks/sweep/reject", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status == 403
    assert "WWW-Authenticate" not in answer.headers
