"""The generated broker of tests/hub/service/test_mosquitto_security.py, for
help_test_plug's broker half (tests/hub/plugs/plug_contract.py)."""

from tests.hub.service.test_mosquitto_security import shop as broker_shop  # noqa: F401
