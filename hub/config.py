"""The hub's configuration: one TOML file plus ``PEERSHOP_<SECTION>_<KEY>`` overrides.

Every key is checked at the door (Moonraker-style): a bad value stops start-up with a
:class:`~hub.errors.ConfigError` naming ``section.key`` and the reason.

>>> cfg = load_config(None, env={"PEERSHOP_MQTT_PORT": "1884"}, search=())
>>> cfg.mqtt.port, cfg.http.listen
(1884, ('127.0.0.1', 8080))
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hub import checks
from hub.contract.messages import DEVICE_ID
from hub.errors import ConfigError

if TYPE_CHECKING:
    from hub.contract.mqtt import MqttSettings

DEFAULT_SEARCH = (Path("peershop.toml"), Path("/etc/peershop/peershop.toml"))
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _opt_text(value: Any) -> str | None:
    return None if value in (None, "") else checks.text(value)


def _duration_range(lo: timedelta, hi: timedelta) -> Callable[[Any], timedelta]:
    def parse(value: Any) -> timedelta:
        span = checks.duration(value)
        if not lo <= span <= hi:
            raise ValueError(f"must be between {_span(lo)} and {_span(hi)}, got {value!r}")
        return span

    return parse


def _span(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _listen(value: Any) -> tuple[str, int]:
    host, sep, port = checks.text(value).rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected host:port, got {value!r}")
    return host.strip("[]"), checks.port(port)


def _timezone(value: Any) -> ZoneInfo:
    try:
        return ZoneInfo(checks.text(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None


def _anchor(value: Any) -> tuple[int, time]:
    """``"monday 00:00"``: the weekday and local time at which periods start."""
    parts = checks.text(value).strip().lower().split()
    if len(parts) != 2 or parts[0] not in WEEKDAYS:
        raise ValueError(f"expected '<weekday> HH:MM', got {value!r}")
    try:
        at = time.fromisoformat(parts[1])
    except ValueError:
        raise ValueError(f"expected '<weekday> HH:MM', got {value!r}") from None
    return WEEKDAYS.index(parts[0]), at


def _clock(value: Any) -> time:
    try:
        return time.fromisoformat(checks.text(value).strip())
    except ValueError:
        raise ValueError(f"expected a local time HH:MM, got {value!r}") from None


# A site's id names it in the shop file (``site:`` of a tool or station), on the floor and
# in bridge topics, so it follows the device id pattern of docs/device-protocol.md.
SITE_ID = DEVICE_ID
DEFAULT_SITE = "main"


_site_id = checks.matches(SITE_ID, "site id", "lowercase letters, digits and '-', at most 63")


def _path(value: Any) -> Path:
    return Path(checks.text(value)).expanduser()


def _db_url(value: Any) -> str:
    from sqlalchemy.engine import make_url  # start-up time: agents skip it
    from sqlalchemy.exc import ArgumentError  # start-up time: agents skip it

    text = checks.text(value)
    try:
        url = make_url(text)
    except ArgumentError:
        raise ValueError(f"not a database URL: {text!r}") from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(f"only sqlite and postgresql are supported, got {url.drivername!r}")
    return text


def _sqlite_folder_exists(url: str) -> None:
    """A SQLite file set in ``db.url`` must be in a folder that exists.

    SQLite makes a missing file, and the hub made a missing folder, so a typo in the path
    gave an empty database and a hub that denied every badge.  ``site.data_dir``'s default
    database is still made on first use: that folder is peershop's own.
    """
    from sqlalchemy.engine import make_url  # start-up time: agents skip it

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    folder = Path(parsed.database).expanduser().resolve().parent
    if not folder.is_dir():
        raise ConfigError(
            "db.url",
            f"the folder {folder} of the SQLite database does not exist (a typo? create "
            "the folder first if a new database is meant)",
        )


def _networks(value: Any) -> tuple[str, ...]:
    """Addresses or CIDRs: a TOML list, or a comma-separated string (environment)."""
    items = value if isinstance(value, list) else str(value).split(",")
    out = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"{text!r} is not an address or network (e.g. 10.0.5.20/32)") from None
        out.append(text)
    return tuple(out)


@dataclass(frozen=True)
class Key:
    parse: Callable[[Any], Any]
    default: Any


def _key(parse: Callable[[Any], Any], default: Any) -> Any:
    """A section field: its parser and its default as written in TOML (``"7d"``).

    ``None`` defaults are optional keys (or, for ``db.url`` and ``http.streams``, derived
    from other keys in :func:`load_config`)."""
    return field(metadata={"key": Key(parse, default)})


# Threads of the web server that live pages' streams may never take: the pages, the API
# and /metrics always have these (http.streams <= http.threads - PAGE_THREADS).
PAGE_THREADS = 8


def default_streams(threads: int) -> int:
    """``http.streams`` when unset: two thirds of the threads, leaving ``PAGE_THREADS``."""
    return max(0, min(threads * 2 // 3, threads - PAGE_THREADS))


# One dataclass per section: each field's type is what the hub reads, its metadata the
# parser and the TOML default.  SCHEMA below is derived from them.


@dataclass(frozen=True)
class SiteConfig:
    name: str = _key(checks.text, "peershop")
    # which site's tools and stations this hub runs (several hubs share one database)
    id: str = _key(_site_id, DEFAULT_SITE)
    data_dir: Path = _key(_path, "./data")
    timezone: ZoneInfo = _key(_timezone, "UTC")


@dataclass(frozen=True)
class DbConfig:
    url: str = _key(_db_url, None)  # default derived from site.data_dir


@dataclass(frozen=True)
class MqttConfig:
    host: str = _key(checks.host, "127.0.0.1")
    port: int = _key(checks.port, 1883)
    username: str | None = _key(_opt_text, None)
    password: str | None = _key(_opt_text, None)
    tls_ca: str | None = _key(_opt_text, None)
    client_id: str = _key(checks.text, "peershop-hub")
    keepalive: int = _key(checks.integer(5, 3600), 30)

    def settings(self) -> MqttSettings:
        """The broker's address and login for :class:`~hub.contract.mqtt.MqttLink`."""
        from hub.contract.mqtt import MqttSettings  # start-up time: paho only for a link

        return MqttSettings(
            host=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            tls_ca=self.tls_ca,
            keepalive=self.keepalive,
        )


@dataclass(frozen=True)
class HttpConfig:
    listen: tuple[str, int] = _key(_listen, "127.0.0.1:8080")
    # browsers at these addresses (the wall screen) see member names without a login
    kiosk_networks: tuple[str, ...] = _key(_networks, [])
    # waitress's worker threads; each open live page (SSE stream) holds one
    threads: int = _key(checks.integer(PAGE_THREADS, 1024), 48)
    # live pages streamed at once, more get 503 and poll (docs/web.md); default: 2/3 of
    # the threads
    streams: int = _key(checks.integer(0, 1024 - PAGE_THREADS), None)
    # streams one client address may hold, so one client cannot take them all
    streams_per_client: int = _key(checks.integer(1, 1024), 4)
    # the TLS proxy in front: only from these addresses is X-Forwarded-For believed
    trusted_proxies: tuple[str, ...] = _key(_networks, [])
    # request bodies larger than this get 413 before anything reads them
    max_body_bytes: int = _key(checks.integer(1024, 16 * 1024 * 1024), 64 * 1024)
    # a kiosk login (badge and PIN) ends after this long without a click or a key
    kiosk_idle: timedelta = _key(_duration_range(timedelta(seconds=10), timedelta(hours=1)), "2m")


@dataclass(frozen=True)
class PeriodConfig:
    length: timedelta = _key(checks.duration, "7d")
    # the weekday (0 = Monday) and local time at which periods start
    anchor: tuple[int, time] = _key(_anchor, "monday 00:00")
    # `peershop period close` refuses to end a period younger than this (--force does it
    # anyway): closing twice in a row made a period of one second
    min_length: timedelta = _key(checks.duration, "1h")


@dataclass(frozen=True)
class PresenceConfig:
    # forgotten sign-outs (and task-station efforts) close at this local time
    auto_signout: time = _key(_clock, "04:00")


@dataclass(frozen=True)
class HomeAssistantConfig:
    discovery: bool = _key(checks.flag, False)
    prefix: str = _key(checks.text, "homeassistant")


@dataclass(frozen=True)
class IngestConfig:
    batch_max: int = _key(checks.integer(1, 10000), 1000)
    receive_maximum: int = _key(checks.integer(20, 65535), 2000)
    # decided messages waiting for their commit, at most: past it the MQTT thread stops
    # reading, so a broker's backlog waits in the broker, not in the hub's memory
    max_pending: int = _key(checks.integer(100, 1_000_000), 10_000)
    reset_on_start: bool = _key(checks.flag, False)
    # a power reading outside these is a dead letter: 1e300 W would make 1e297 Wh
    min_power_w: float = _key(checks.number(-1_000_000, 1_000_000), 0.0)
    max_power_w: float = _key(checks.number(1, 10_000_000), 100_000.0)
    max_wh_total: float = _key(checks.number(1, 10**15), 1e10)  # 100 kW for over 11 years


# Limits of the Mosquitto that `peershop mosquitto-config` writes (Mosquitto 2.0's are
# global: every client gets the same).  A queue cap loses messages past it, so the
# defaults hold a day of a big shop's events for a hub that is down, in a Pi's memory.
@dataclass(frozen=True)
class BrokerConfig:
    # the largest MQTT packet: room for a 5,000-member shop's signed allow-list (~320 KB)
    # three times over; a device that sends a bigger one is disconnected
    max_packet_size: int = _key(checks.integer(65_536, 268_435_460), 1_048_576)
    # per client, beyond those in flight; more are dropped for that client
    max_queued_messages: int = _key(checks.integer(1_000, 100_000_000), 500_000)
    max_queued_bytes: int = _key(checks.integer(1_048_576, 1 << 40), 64 << 20)


_SECTIONS: dict[str, type] = {
    "site": SiteConfig,
    "db": DbConfig,
    "mqtt": MqttConfig,
    "http": HttpConfig,
    "period": PeriodConfig,
    "presence": PresenceConfig,
    "homeassistant": HomeAssistantConfig,
    "ingest": IngestConfig,
    "broker": BrokerConfig,
}

# The schema: section -> key -> (parser, default), read off the section classes.
SCHEMA: dict[str, dict[str, Key]] = {
    name: {f.name: f.metadata["key"] for f in fields(cls)} for name, cls in _SECTIONS.items()
}


@dataclass(frozen=True)
class Config:
    """The whole, validated configuration; ``source`` is the file it came from, if any."""

    site: SiteConfig
    db: DbConfig
    mqtt: MqttConfig
    http: HttpConfig
    period: PeriodConfig
    presence: PresenceConfig
    homeassistant: HomeAssistantConfig
    ingest: IngestConfig
    broker: BrokerConfig
    source: Path | None = None

    def replace(self, **sections: Mapping[str, Any]) -> Config:
        """A copy with some keys changed, e.g. ``cfg.replace(mqtt={"port": 1884})``.

        The values are taken as given (already parsed), not checked again."""
        changed = {
            name: replace(getattr(self, name), **values) for name, values in sections.items()
        }
        return replace(self, **changed)


def _find(path: str | Path | None, search: Iterable[Path]) -> Path | None:
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError("--config", f"file {path} does not exist")
        return path
    for candidate in search:
        if candidate.is_file():
            return candidate
    return None


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    search: Iterable[Path] = DEFAULT_SEARCH,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Read the TOML file, apply environment and explicit overrides, validate every key."""
    env = os.environ if env is None else env
    source = _find(path, search)
    raw: dict[str, dict[str, Any]] = {}
    if source is not None:
        try:
            raw = tomllib.loads(source.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(source), f"is not valid TOML ({exc})") from None
        except OSError as exc:
            raise ConfigError(str(source), f"cannot be read ({exc.strerror})") from None
    for section, values in raw.items():
        if section not in SCHEMA:
            raise ConfigError(section, f"unknown section (known: {', '.join(SCHEMA)})")
        if not isinstance(values, dict):
            raise ConfigError(section, "must be a table")
        for problem in checks.unknown_keys(values, SCHEMA[section]):
            raise ConfigError(f"{section}.{problem.key}", str(problem))
    for name, value in env.items():
        if not name.startswith("PEERSHOP_"):
            continue
        rest = name[len("PEERSHOP_") :].lower()
        section, _, key = rest.partition("_")
        if section not in SCHEMA:
            continue  # PEERSHOP_* variables of other tools are not ours to judge
        for problem in checks.unknown_keys([key], SCHEMA[section]):
            raise ConfigError(f"{section}.{key}", f"{problem} (from environment {name})")
        raw.setdefault(section, {})[key] = value
    for section, changes in (overrides or {}).items():
        raw.setdefault(section, {}).update(changes)

    parsed: dict[str, dict[str, Any]] = {}
    for section, keys in SCHEMA.items():
        parsed[section] = {}
        for key, spec in keys.items():
            value = raw.get(section, {}).get(key, spec.default)
            if value is None:
                parsed[section][key] = None
                continue
            try:
                parsed[section][key] = spec.parse(value)
            except ValueError as exc:
                raise ConfigError(f"{section}.{key}", str(exc)) from None
    if parsed["db"]["url"] is None:
        data_dir = parsed["site"]["data_dir"].resolve()
        parsed["db"]["url"] = f"sqlite:///{data_dir / 'peershop.db'}"
    else:
        _sqlite_folder_exists(parsed["db"]["url"])
    if parsed["mqtt"]["password"] and not parsed["mqtt"]["username"]:
        raise ConfigError("mqtt.username", "is required when mqtt.password is set")
    http = parsed["http"]
    if http["streams"] is None:
        http["streams"] = default_streams(http["threads"])
    elif http["streams"] > http["threads"] - PAGE_THREADS:
        raise ConfigError(
            "http.streams",
            f"must leave {PAGE_THREADS} of http.threads ({http['threads']}) for pages: "
            f"at most {http['threads'] - PAGE_THREADS}, got {http['streams']}",
        )
    ingest = parsed["ingest"]
    if ingest["min_power_w"] >= ingest["max_power_w"]:
        raise ConfigError(
            "ingest.min_power_w",
            f"must be below ingest.max_power_w ({ingest['max_power_w']:g}), "
            f"got {ingest['min_power_w']:g}",
        )
    broker = parsed["broker"]
    if broker["max_queued_bytes"] < broker["max_packet_size"]:
        raise ConfigError(
            "broker.max_queued_bytes",
            f"must hold at least one packet of broker.max_packet_size "
            f"({broker['max_packet_size']}), got {broker['max_queued_bytes']}",
        )
    tls_ca = parsed["mqtt"]["tls_ca"]
    if tls_ca and not Path(tls_ca).is_file():
        raise ConfigError("mqtt.tls_ca", f"file {tls_ca} does not exist")
    return Config(**{n: _SECTIONS[n](**parsed[n]) for n in SCHEMA}, source=source)
