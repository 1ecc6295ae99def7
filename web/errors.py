"""The web view's error answers: the API's JSON error body, the Bearer challenge of a 401
and the too-large message, shared by the app (web/__init__.py), its blueprints and the
server (web/serve.py)."""

from __future__ import annotations

from flask import jsonify, request

REALM = "peershop"


def body_too_large(limit: int) -> str:
    return f"the request body is larger than http.max_body_bytes ({limit} bytes)"


def api_error(status: int, code: str, message: str | None):
    """The API's error body, docs/http-api.md: ``{"error":{"code","message"}}``."""
    response = jsonify({"error": {"code": code, "message": message or code}})
    response.status_code = status
    return response


def bearer_challenge() -> str:
    """The ``WWW-Authenticate`` value of a 401 (RFC 6750 §3): a Bearer challenge, with
    ``error="invalid_token"`` when the request sent a token that is unknown or revoked."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    challenge = f'Bearer realm="{REALM}"'
    if scheme.lower() == "bearer" and token.strip():
        challenge += ', error="invalid_token", error_description="unknown or revoked token"'
    return challenge
