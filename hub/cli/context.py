"""What every ``peershop`` command shares: the click context (config path, verbosity),
logging set-up and the migrated database."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from hub.config import Config, load_config
from hub.errors import ConfigError
from hub.store.db import make_engine, migrate, session_factory


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Alembic announces every plugin at INFO on each start; only its problems matter here.
    logging.getLogger("alembic").setLevel(logging.WARNING)


class Context:
    def __init__(self, config_path: str | None, verbose: bool):
        self.config_path = config_path
        self.verbose = verbose
        self._config: Config | None = None

    def config(self, **overrides: dict[str, Any]) -> Config:
        if self._config is None or overrides:
            try:
                self._config = load_config(self.config_path, overrides=overrides or None)
            except ConfigError as exc:
                raise click.ClickException(f"invalid configuration: {exc}") from None
        return self._config


pass_ctx = click.make_pass_decorator(Context)


def database(ctx: Context) -> tuple[Engine, sessionmaker[Session]]:
    """An engine and session factory for the configured database, migrated."""
    engine = make_engine(ctx.config().db.url)
    migrate(engine)
    return engine, session_factory(engine)
