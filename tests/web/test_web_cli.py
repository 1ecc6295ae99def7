"""``peershop token create`` and ``peershop user password|pin``."""

from __future__ import annotations

from click.testing import CliRunner
from sqlalchemy import select

from hub.cli import main
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import ApiToken, Member, WebLogin
from tests.conftest import database_url
from web.auth import token_digest, verify_secret


def _env(tmp_path):
    url = database_url(tmp_path, "cli.db")
    engine = make_engine(url)
    migrate(engine)
    with session_factory(engine).begin() as s:
        s.add(Member(handle="cora", name="Cora", roles=["coordinator"]))
    return engine, {"PEERSHOP_DB_URL": url, "PEERSHOP_SITE_DATA_DIR": str(tmp_path)}


def test_token_create_prints_the_token_once_and_stores_its_hash(tmp_path):
    engine, env = _env(tmp_path)
    result = CliRunner().invoke(
        main, ["token", "create", "--role", "coordinator", "--name", "grafana"], env=env
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert token.startswith("psk_") and len(token) > 40
    with session_factory(engine)() as s:
        row = s.scalar(select(ApiToken))
        assert row.token_hash == token_digest(token) and row.role == "coordinator"
    refused = CliRunner().invoke(
        main, ["token", "create", "--role", "member", "--name", "x"], env=env
    )
    assert refused.exit_code != 0 and "--member" in refused.output
    refused = CliRunner().invoke(
        main, ["token", "create", "--role", "root", "--name", "x"], env=env
    )
    assert refused.exit_code != 0
    engine.dispose()


def test_user_password_sets_the_first_coordinators_password_from_a_prompt(tmp_path):
    engine, env = _env(tmp_path)
    result = CliRunner().invoke(
        main, ["user", "password", "cora"], input="correct horse\ncorrect horse\n", env=env
    )
    assert result.exit_code == 0, result.output
    assert "correct horse" not in result.output  # not echoed
    with session_factory(engine)() as s:
        stored = s.get(WebLogin, 1).password_hash
    assert stored.startswith("$argon2") and verify_secret(stored, "correct horse")
    short = CliRunner().invoke(main, ["user", "pin", "cora"], input="12\n12\n", env=env)
    assert short.exit_code != 0
    nobody = CliRunner().invoke(
        main, ["user", "password", "zed"], input="long enough\nlong enough\n", env=env
    )
    assert nobody.exit_code != 0 and "no member" in nobody.output
    engine.dispose()
