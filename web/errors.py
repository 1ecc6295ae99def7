"""The web view's error answers: the API's JSON error body and the too-large message,
shared by the app (web/__init__.py), its blueprints and the server (web/serve.py)."""

from __future__ import annotations

from flask import jsonify


def body_too_large(limit: int) -> str:
    return f"the request body is larger than http.max_body_bytes ({limit} bytes)"


def api_error(status: int, code: str, message: str | None):
    """The API's error body, CONTRACT.md §5: ``{"error":{"code","message"}}``."""
    response = jsonify({"error": {"code": code, "message": message or code}})
    response.status_code = status
    return response
