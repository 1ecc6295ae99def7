"""The one exception tree of peershop (one module, like gpiozero's ``exc.py``).

Every error peershop raises on purpose is a :class:`PeershopError`, defined here whatever
layer raises it, so a caller catches by meaning without importing the layer.  None of them
is a click exception: the CLI (hub/cli/) turns a :class:`PeershopError` into click's
``Error: ...`` and exit status 1, the web view into a 4xx with the message.
"""


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


class EnrolError(PeershopError, ValueError):
    """The badge cannot be assigned; the message says why."""


class BackupError(PeershopError, RuntimeError):
    """A backup or restore could not be made; nothing was changed."""


class DatabaseInUseError(PeershopError, RuntimeError):
    """A hub holds the database (so it cannot be restored), or a restore does (so no hub
    may start)."""


class ExportError(PeershopError, ValueError):
    """An export asked for a period or range that does not exist."""


class ToolEditError(PeershopError, ValueError):
    """An Admin edit was refused; ``problems`` maps each setting's name to its reason."""

    def __init__(self, problems: dict[str, str]):
        self.problems = problems
        super().__init__("; ".join(f"{k}: {v}" for k, v in problems.items()))


class ReservationError(PeershopError, ValueError):
    """A reservation cannot be made as asked (no such slot, bids closed, bid below 1)."""


class CredentialError(PeershopError, ValueError):
    """A device id, topic or broker setting cannot become an MQTT account or file."""


class TaskBoardError(PeershopError, ValueError):
    """A board action that cannot be done (no such task, no slot left, not claimed)."""


class NotAllowedError(TaskBoardError):
    """The member may not do this (confirm a claim they did not witness, or their own)."""


class PeriodError(PeershopError, ValueError):
    """A period cannot be closed or changed as asked (closed already, empty)."""


class ClosedPeriodError(PeriodError):
    """Something tried to change a closed period or what its close stored."""


class SecretRuleError(PeershopError, ValueError):
    """A password or kiosk PIN that the rule for web logins refuses."""
