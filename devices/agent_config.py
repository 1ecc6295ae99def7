"""The configuration of ``peershop agent``: one TOML file, every key checked at the door.

A key that is wrong stops the agent with a :class:`~hub.errors.ConfigError` naming it as
``agent.<section>.<key>`` and the reason, e.g.
``config key agent.reader.type: must be one of rdm6300, pn532, wiegand, keyboard_wedge, not 'x'``.
Every driver section is optional; docs/agent.md lists the keys and their defaults.

>>> cfg = parse_agent_config({"id": "drill-node", "interlock": {"pin": 5}})
>>> cfg.id, cfg.interlock.pin, cfg.interlock.active_high, cfg.decide_timeout
('drill-node', 5, True, 1.5)
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub import __version__, checks
from hub.contract.allowlist import load_public_key
from hub.contract.messages import DEVICE_ID, normalize_uid
from hub.contract.mqtt import MqttSettings
from hub.errors import ConfigError, ContractError

READER_TYPES = ("rdm6300", "pn532", "wiegand", "keyboard_wedge")
PIN_FACTORIES = ("default", "mock")
POLICIES = ("tap", "card_present")


@dataclass(frozen=True)
class ReaderOptions:
    type: str
    port: str | None = None  # rdm6300, pn532
    device: str | None = None  # keyboard_wedge
    d0: int = 17  # wiegand
    d1: int = 27
    fmt: str = "decimal"  # keyboard_wedge
    hold_time: float | None = None  # the driver's default when None
    include_version: bool = True  # rdm6300: 5 bytes (version + tag) or the 4 tag bytes
    report_removed: bool = True


@dataclass(frozen=True)
class InterlockOptions:
    pin: int
    active_high: bool = True
    no_cut_while_busy: bool = False


@dataclass(frozen=True)
class IndicatorOptions:
    led: int | None = None
    rgb: tuple[int, int, int] | None = None
    buzzer: int | None = None
    active_high: bool = True


@dataclass(frozen=True)
class CurrentSensorOptions:
    channel: int = 0
    amps_per_volt: float = 30.0
    mains_voltage: float = 230.0
    mains_hz: float = 50.0
    running_w: float = 100.0
    idle_w: float = 50.0
    interval: float = 1.0
    report_every: float = 10.0


@dataclass(frozen=True)
class RunningInputOptions:
    pin: int
    pull_up: bool = True
    settle_time: float = 0.2


@dataclass(frozen=True)
class AgentConfig:
    """The validated agent configuration (see docs/agent.md)."""

    id: str
    state_dir: Path = Path("/var/lib/peershop-agent")
    fw: str = ""
    tool: str | None = None
    decide_timeout: float = 1.5
    resend_window_s: float = 10.0
    policy: str = "tap"
    maintainers: tuple[str, ...] = ()
    pin_factory: str = "default"
    public_key: str | None = None
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    reader: ReaderOptions | None = None
    interlock: InterlockOptions | None = None
    indicator: IndicatorOptions | None = None
    current_sensor: CurrentSensorOptions | None = None
    running_input: RunningInputOptions | None = None
    buttons: dict[str, int] = field(default_factory=dict)

    @property
    def kind(self) -> list[str]:
        """What the status birth says this device has."""
        kind = []
        if self.reader:
            kind.append("reader")
        if self.interlock:
            kind.append("interlock")
        if self.current_sensor:
            kind.append("power")
        if self.running_input:
            kind.append("running")
        if self.buttons:
            kind.append("button")
        return kind


# --- value checkers: raise ValueError with the reason -------------------------------------


_gpio = checks.integer(0, 53)


class _Section:
    """Reads one table, naming keys ``agent.<section>.<key>`` in errors."""

    def __init__(self, raw: Any, prefix: str, known: tuple[str, ...]):
        self.prefix = prefix
        if not isinstance(raw, Mapping):
            raise ConfigError(prefix.rstrip("."), "must be a table")
        for problem in checks.unknown_keys(raw, known):
            raise ConfigError(f"{prefix}{problem.key}", str(problem))
        self.raw = raw

    def get(self, key: str, parse, default: Any = None, *, required: bool = False) -> Any:
        if key not in self.raw:
            if required:
                raise ConfigError(f"{self.prefix}{key}", "is required")
            return default
        try:
            return parse(self.raw[key])
        except (ValueError, TypeError, ContractError) as exc:
            raise ConfigError(f"{self.prefix}{key}", str(exc)) from None


_device_id = checks.matches(DEVICE_ID, "device id", "lowercase letters, digits and '-', at most 63")


def _uids(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise ValueError("expected a list of badge uids (hex)")
    return tuple(normalize_uid(u) for u in v)


def _public_key(v: Any) -> str:
    key = checks.text(v).strip()
    load_public_key(key)  # ValueError if it is not 32 bytes of base64
    return key


def _mains_hz(v: Any) -> float:
    if v not in (50, 60) or isinstance(v, bool):
        raise ValueError(f"must be 50 or 60, not {checks.show(v)}")
    return float(v)


def _rgb(v: Any) -> tuple[int, int, int]:
    if not isinstance(v, list) or len(v) != 3:
        raise ValueError("expected three GPIO numbers [red, green, blue]")
    return tuple(_gpio(p) for p in v)  # type: ignore[return-value]


TOP_KEYS = (
    "id",
    "state_dir",
    "fw",
    "tool",
    "decide_timeout",
    "resend_window_s",
    "policy",
    "maintainers",
    "pin_factory",
    "mqtt",
    "hub",
    "reader",
    "interlock",
    "indicator",
    "current_sensor",
    "running_input",
    "buttons",
)


def parse_agent_config(raw: Mapping[str, Any], *, base: Path | None = None) -> AgentConfig:
    """Check a decoded TOML document; ``base`` resolves relative paths (the file's folder)."""
    top = _Section(raw, "agent.", TOP_KEYS)
    base = base or Path.cwd()
    cfg: dict[str, Any] = {
        "id": top.get("id", _device_id, required=True),
        "state_dir": base / top.get("state_dir", checks.text, "/var/lib/peershop-agent"),
        "fw": top.get("fw", checks.text, __version__),
        "tool": top.get("tool", _device_id),
        "decide_timeout": top.get("decide_timeout", checks.seconds, 1.5),
        "resend_window_s": top.get("resend_window_s", checks.seconds, 10.0),
        "policy": top.get("policy", checks.choice(POLICIES), "tap"),
        "maintainers": top.get("maintainers", _uids, ()),
        "pin_factory": top.get("pin_factory", checks.choice(PIN_FACTORIES), "default"),
    }

    if "mqtt" in raw:
        s = _Section(
            raw["mqtt"],
            "agent.mqtt.",
            ("host", "port", "username", "password", "tls_ca", "keepalive"),
        )
        tls_ca = s.get("tls_ca", checks.text)
        if tls_ca and not (base / tls_ca).is_file():
            raise ConfigError("agent.mqtt.tls_ca", f"file {tls_ca} does not exist")
        cfg["mqtt"] = MqttSettings(
            host=s.get("host", checks.host, "127.0.0.1"),
            port=s.get("port", checks.port, 1883),
            username=s.get("username", checks.text, None),
            password=s.get("password", checks.text, None),
            tls_ca=str(base / tls_ca) if tls_ca else None,
            keepalive=s.get("keepalive", checks.integer(5, 3600), 30),
        )

    if "hub" in raw:
        s = _Section(raw["hub"], "agent.hub.", ("public_key", "public_key_file"))
        key = s.get("public_key", _public_key)
        path = s.get("public_key_file", checks.text)
        if key and path:
            raise ConfigError("agent.hub.public_key_file", "give public_key or the file, not both")
        if path:
            try:
                text = (base / path).read_text(encoding="ascii").strip()
            except OSError as exc:
                raise ConfigError(
                    "agent.hub.public_key_file", f"cannot read {path}: {exc}"
                ) from None
            try:
                key = _public_key(text)
            except ValueError as exc:
                raise ConfigError("agent.hub.public_key_file", str(exc)) from None
        cfg["public_key"] = key

    if "reader" in raw:
        s = _Section(
            raw["reader"],
            "agent.reader.",
            (
                "type",
                "port",
                "device",
                "d0",
                "d1",
                "fmt",
                "hold_time",
                "include_version",
                "report_removed",
            ),
        )
        kind = s.get("type", checks.choice(READER_TYPES), required=True)
        reader = ReaderOptions(
            type=kind,
            port=s.get("port", checks.text, "/dev/serial0"),
            device=s.get("device", checks.text, required=kind == "keyboard_wedge"),
            d0=s.get("d0", _gpio, 17),
            d1=s.get("d1", _gpio, 27),
            fmt=s.get("fmt", checks.choice(("decimal", "hex")), "decimal"),
            hold_time=s.get("hold_time", checks.non_negative),
            include_version=s.get("include_version", checks.flag, True),
            report_removed=s.get("report_removed", checks.flag, True),
        )
        cfg["reader"] = reader

    if "interlock" in raw:
        s = _Section(
            raw["interlock"], "agent.interlock.", ("pin", "active_high", "no_cut_while_busy")
        )
        cfg["interlock"] = InterlockOptions(
            pin=s.get("pin", _gpio, required=True),
            active_high=s.get("active_high", checks.flag, True),
            no_cut_while_busy=s.get("no_cut_while_busy", checks.flag, False),
        )

    if "indicator" in raw:
        s = _Section(raw["indicator"], "agent.indicator.", ("led", "rgb", "buzzer", "active_high"))
        led, rgb = s.get("led", _gpio), s.get("rgb", _rgb)
        if (led is None) == (rgb is None):
            raise ConfigError("agent.indicator.led", "give either led or rgb")
        cfg["indicator"] = IndicatorOptions(
            led=led,
            rgb=rgb,
            buzzer=s.get("buzzer", _gpio),
            active_high=s.get("active_high", checks.flag, True),
        )

    if "current_sensor" in raw and "running_input" in raw:
        raise ConfigError("agent.running_input", "give current_sensor or running_input, not both")
    if "current_sensor" in raw:
        s = _Section(
            raw["current_sensor"],
            "agent.current_sensor.",
            (
                "channel",
                "amps_per_volt",
                "mains_voltage",
                "mains_hz",
                "running_w",
                "idle_w",
                "interval",
                "report_every",
            ),
        )
        sensor = CurrentSensorOptions(
            channel=s.get("channel", checks.integer(0, 7), 0),
            amps_per_volt=s.get("amps_per_volt", checks.positive, 30.0),
            mains_voltage=s.get("mains_voltage", checks.positive, 230.0),
            mains_hz=s.get("mains_hz", _mains_hz, 50.0),
            running_w=s.get("running_w", checks.non_negative, 100.0),
            idle_w=s.get("idle_w", checks.non_negative, 50.0),
            interval=s.get("interval", checks.seconds, 1.0),
            report_every=s.get("report_every", checks.seconds, 10.0),
        )
        if sensor.idle_w > sensor.running_w:
            raise ConfigError("agent.current_sensor.idle_w", "must not be above running_w")
        cfg["current_sensor"] = sensor
    if "running_input" in raw:
        s = _Section(
            raw["running_input"], "agent.running_input.", ("pin", "pull_up", "settle_time")
        )
        cfg["running_input"] = RunningInputOptions(
            pin=s.get("pin", _gpio, required=True),
            pull_up=s.get("pull_up", checks.flag, True),
            settle_time=s.get("settle_time", checks.non_negative, 0.2),
        )

    if "buttons" in raw:
        table = raw["buttons"]
        if not isinstance(table, Mapping):
            raise ConfigError("agent.buttons", "must be a table of name = GPIO")
        buttons = {}
        for name, pin in table.items():
            if not isinstance(name, str) or not 0 < len(name) <= 64:
                raise ConfigError(f"agent.buttons.{name}", "a button name is 1-64 characters")
            try:
                buttons[name] = _gpio(pin)
            except ValueError as exc:
                raise ConfigError(f"agent.buttons.{name}", str(exc)) from None
        cfg["buttons"] = buttons

    pins = [
        ("agent.interlock.pin", cfg["interlock"].pin if cfg.get("interlock") else None),
        ("agent.running_input.pin", cfg["running_input"].pin if cfg.get("running_input") else None),
        *((f"agent.buttons.{n}", p) for n, p in cfg.get("buttons", {}).items()),
    ]
    if cfg.get("indicator"):
        ind = cfg["indicator"]
        pins += [("agent.indicator.led", ind.led), ("agent.indicator.buzzer", ind.buzzer)]
        pins += [("agent.indicator.rgb", p) for p in ind.rgb or ()]
    if cfg.get("reader") and cfg["reader"].type == "wiegand":
        pins += [("agent.reader.d0", cfg["reader"].d0), ("agent.reader.d1", cfg["reader"].d1)]
    used: dict[int, str] = {}
    for key, pin in pins:
        if pin is None:
            continue
        if pin in used:
            raise ConfigError(key, f"GPIO{pin} is already used by {used[pin]}")
        used[pin] = key
    return AgentConfig(**cfg)


def load_agent_config(path: str | Path) -> AgentConfig:
    """Read and check ``agent.toml``; relative paths in it are relative to its folder."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("--config", f"file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"is not valid TOML ({exc})") from None
    return parse_agent_config(raw, base=path.resolve().parent)
