"""The small exception tree of peershop (one module, like gpiozero's ``exc.py``)."""


class PeershopError(Exception):
    """Base class of every error peershop raises on purpose."""


class ConfigError(PeershopError, ValueError):
    """A config value is missing or invalid; the message names the key."""

    def __init__(self, key: str, reason: str):
        self.key = key
        self.reason = reason
        super().__init__(f"config key {key}: {reason}")


class ContractError(PeershopError, ValueError):
    """A message breaks docs/device-protocol.md; the message says what is wrong."""


class ShopFileError(PeershopError, ValueError):
    """A shop file (docs/shop-file.md) is invalid; the message names the entry and line."""


class ScenarioError(PeershopError, ValueError):
    """A scenario file (docs/scenario-format.md) is invalid; the message names the entry."""


class BrokerError(PeershopError, RuntimeError):
    """A private Mosquitto could not be started or reached."""


class PacketTooLarge(PeershopError, ValueError):
    """A message is bigger than the broker's Maximum Packet Size; it was not sent."""
