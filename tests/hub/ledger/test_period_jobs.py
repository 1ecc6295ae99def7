"""The hub closes periods on schedule by itself, and posts the next task weights."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select

import hub.service.service
from hub.service.service import Hub
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import Period, Task
from tests.conftest import make_config
from tests.helpers import wait_for

SHOP = """
projects:
  - {id: commons, name: Shop commons, model: flat_rate}
tasks:
  - {id: empty-dust, title: Empty the dust collector, project: commons, slots: 4, hours: 0.5}
"""


def test_the_hub_closes_ended_periods_and_moves_weights_by_rule(tmp_path, broker, monkeypatch):
    monkeypatch.setattr(hub.service.service, "PERIOD_JOBS_S", 0.5)
    cfg = make_config(tmp_path, broker, period={"length": "2s"}, mqtt={"client_id": "hub-periods"})
    engine = make_engine(cfg.db.url)
    migrate(engine)
    with session_factory(engine).begin() as session:
        apply_shop(session, parse_shop(SHOP))
    engine.dispose()
    running = Hub(cfg)
    running.start()
    try:

        def closed():
            with running.sm() as session:
                return session.scalars(select(Period).where(Period.closed_at.is_not(None))).all()

        wait_for(closed, 20, "a period closed by the hub's own timer")
        with running.sm() as session:
            weight = session.get(Task, "empty-dust").weight
        # nobody took the task: S = 4, V = 0, so each close multiplies by 1 + 0.2
        # (docs/sharing-models.md, rule (a)): 1.2, 1.44, ... up to the 4.0 bound
        assert weight in {min(Decimal("1.2") ** n, Decimal(4)) for n in range(1, 10)}
        # the live rules post it: a station effort started now is credited at it
        wait_for(lambda: running.rules.data.tasks["empty-dust"].weight >= Decimal("1.2"))
    finally:
        running.stop()
