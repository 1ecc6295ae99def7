"""MQTT accounts and the broker files the hub writes for Mosquitto.

Every device logs in to Mosquitto with its own username and password.  The database
keeps only the password's hash, in Mosquitto's own ``$7$`` format (PBKDF2-SHA512, as
``mosquitto_passwd`` writes it), so the hub can rewrite the password file at any time
without ever knowing a device's password again.  The ACL is docs/device-protocol.md: a device
writes only its ``event`` and ``status`` (never its own ``cmd``: only the hub commands a
tool) and reads only its ``cmd``, its ``allowlist`` and ``peershop/hub/status``.  The
config binds every login to its own client id, so no login takes over another's session.

>>> line = mosquitto_hash("secret", salt=bytes(12))
>>> line[:32]
'$7$101$AAAAAAAAAAAAAAAA$GKi4qDyk'
>>> verify_password("secret", line), verify_password("guess", line)
(True, False)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import pwd
import re
import secrets
import signal
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.contract.messages import (
    DEVICE_ID,
    DISCOVERY_PREFIX,
    HUB_STATUS_TOPIC,
    allowlist_topic,
    cmd_topic,
    event_topic,
    status_topic,
)
from hub.errors import ConfigError, CredentialError
from hub.plugs import KINDS as PLUG_KINDS
from hub.plugs import plug_name, plug_ref_problem, plugs_overlap
from hub.store.models import Device, MqttAccount, ToolBinding, utcnow

log = logging.getLogger(__name__)


# Mosquitto 2.0's defaults (src/password_mosq.h): 12 salt bytes, 101 iterations, SHA-512.
SALT_BYTES = 12
ITERATIONS = 101

KINDS = ("device", *PLUG_KINDS)
# A Tasmota topic or Shelly prefix becomes part of an ACL line: no wildcards, no spaces,
# no leading "$" (broker topics), no empty levels.
_TOPIC_PART = re.compile(r"[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*")

CONF_NAME = "mosquitto.conf"
PASSWORD_NAME = "passwords"
ACL_NAME = "acl"
SETTINGS_NAME = "peershop-broker.json"
PID_NAME = "mosquitto.pid"

# What the hub's own user may read and write: its protocol and the plugs it drives; and
# the Home Assistant discovery it publishes, under ``homeassistant.prefix``.
HUB_TOPICS = ("peershop/#", "tele/#", "stat/#", "cmnd/#")


def mosquitto_hash(
    password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS
) -> str:
    """``$7$<iterations>$<b64 salt>$<b64 PBKDF2-SHA512>``, exactly as mosquitto_passwd."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches a ``$7$`` hash (as the broker would decide)."""
    try:
        _empty, kind, iterations, salt, digest = encoded.split("$")
        if kind != "7":
            return False
        expected = base64.b64decode(digest, validate=True)
        got = hashlib.pbkdf2_hmac(
            "sha512", password.encode(), base64.b64decode(salt, validate=True), int(iterations)
        )
    except ValueError:
        return False
    return hmac.compare_digest(got, expected)


def new_password() -> str:
    """A fresh device password: 192 random bits, safe to paste into firmware and TOML."""
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Credentials:
    """What ``peershop device add`` prints once; only the hash stays in the database."""

    id: str
    username: str
    password: str

    def as_json(self) -> str:
        return json.dumps(asdict(self))


def _check_id(device_id: str) -> None:
    if not DEVICE_ID.fullmatch(device_id):
        raise CredentialError(
            f"device id {device_id!r} is invalid: use 1-63 of a-z, 0-9 and '-', "
            "starting with a letter or digit (docs/device-protocol.md)"
        )


def _check_topic(kind: str, topic: str | None) -> None:
    if kind == "device":
        if topic is not None:
            raise CredentialError("a peershop device has no topic of its own to set")
        return
    if not topic or not _TOPIC_PART.fullmatch(topic):
        raise CredentialError(
            f"{plug_name(kind)} {topic!r} is invalid: use letters, digits, '_', '-', '.' and "
            "'/' between levels, no wildcards or spaces"
        )


def plug_conflict(
    kind: str,
    topic: str,
    discovery_prefix: str = DISCOVERY_PREFIX,
    *,
    logins: Iterable[tuple[str, str, str]] = (),
    bound: Iterable[tuple[str, str, str]] = (),
    login: str | None = None,
) -> str | None:
    """Why a plug with this ``kind`` and ``topic`` would write topics not its own, or None.

    A reserved tree (``peershop/``, Tasmota's roots, the discovery prefix, ``$``) is never
    a plug's.  Nor is another plug's: ``logins`` are the plug accounts
    ``(username, kind, topic)`` and ``bound`` the shop file's plugs ``(tool, kind, topic)``.
    ``login`` is the account that would hold this topic (``device add``), None for a
    binding of the shop file.  A binding of the same kind and topic is the same plug, and
    so is the account holding it for a binding; any other overlap is refused (a plug
    ``a`` writes ``a/#``, which holds plug ``a/b``'s topics).
    """
    problem = plug_ref_problem(kind, topic, discovery_prefix)
    if problem is not None:
        return problem
    plug = (kind, topic)
    what = f"{plug_name(kind)} {topic!r}"
    for username, other_kind, other in logins:
        same = username == login if login is not None else (other_kind, other) == plug
        if not same and plugs_overlap(plug, (other_kind, other)):
            return f"{what} overlaps {plug_name(other_kind)} {other!r} of plug {username}"
    for tool, other_kind, other in bound:
        if (other_kind, other) != plug and plugs_overlap(plug, (other_kind, other)):
            return f"{what} overlaps {plug_name(other_kind)} {other!r} bound to tool {tool}"
    return None


def plug_logins(session: Session) -> list[tuple[str, str, str]]:
    """The active plug accounts as ``(username, kind, topic)``, for :func:`plug_conflict`."""
    return [(a.username, a.kind, a.topic) for a in active_accounts(session) if a.topic]


def plug_bindings(session: Session) -> list[tuple[str, str, str]]:
    """The plugs bound to tools as ``(tool, kind, topic)``, for :func:`plug_conflict`."""
    rows = session.execute(
        select(ToolBinding.tool_id, ToolBinding.kind, ToolBinding.ref).where(
            ToolBinding.kind.in_(tuple(PLUG_KINDS))
        )
    )
    return [(tool, kind, ref) for tool, kind, ref in rows]


def add_account(
    session: Session,
    device_id: str,
    *,
    hub_username: str | None,
    kind: str = "device",
    topic: str | None = None,
    rotate: bool = False,
    discovery_prefix: str = DISCOVERY_PREFIX,
) -> Credentials:
    """Register (or re-admit) an MQTT account and return its one-time credentials.

    ``kind`` ``device`` is an MQTT device: its ``devices`` row is created or approved.
    Any other kind (:data:`hub.plugs.KINDS`) is a plug, allowed only its own topics,
    which may not reach a reserved tree or another plug's (:func:`plug_conflict`).
    An account that is active already keeps its password unless ``rotate`` is set.
    """
    _check_id(device_id)
    if kind not in KINDS:
        raise CredentialError(f"unknown account kind {kind!r} (known: {', '.join(KINDS)})")
    _check_topic(kind, topic)
    if topic is not None:
        problem = plug_conflict(
            kind,
            topic,
            discovery_prefix,
            logins=plug_logins(session),
            bound=plug_bindings(session),
            login=device_id,
        )
        if problem is not None:
            raise CredentialError(f"{problem}; choose another")
    if hub_username and device_id == hub_username:
        raise CredentialError(
            f"{device_id!r} is the hub's own MQTT user (mqtt.username); choose another id"
        )
    account = session.get(MqttAccount, device_id)
    if account is not None and account.revoked_at is None and not rotate:
        raise CredentialError(
            f"{device_id} already has credentials; use --rotate to issue a new password "
            "(the old one stops working at the next broker reload)"
        )
    password = new_password()
    if account is None:
        account = MqttAccount(username=device_id)
        session.add(account)
    account.kind = kind
    account.topic = topic
    account.password_hash = mosquitto_hash(password)
    account.created_at = utcnow()
    account.revoked_at = None
    if kind == "device":
        device = session.get(Device, device_id)
        if device is None:
            session.add(Device(id=device_id, approval="approved", kind=[]))
        else:
            device.approval = "approved"
    session.flush()
    return Credentials(id=device_id, username=device_id, password=password)


def approve_device(session: Session, device_id: str) -> str:
    """Approve a device that announced itself (Admin's Approve button); returns its
    approval before: ``pending`` when approved now, any other is left as it is."""
    device = session.get(Device, device_id)
    if device is None:
        raise CredentialError(f"no device {device_id}")
    before = device.approval
    if before == "pending":
        device.approval = "approved"
    return before


def revoke_account(session: Session, device_id: str) -> bool:
    """Take away a device's access; ``False`` if it was revoked already.

    The account row stays (revoked, with its time) so the audit shows who had access.
    """
    account = session.get(MqttAccount, device_id)
    device = session.get(Device, device_id)
    if account is None and device is None:
        raise CredentialError(f"no device or MQTT account named {device_id!r}")
    changed = False
    if account is not None and account.revoked_at is None:
        account.revoked_at = utcnow()
        changed = True
    if device is not None and device.approval != "revoked":
        device.approval = "revoked"
        changed = True
    session.flush()
    return changed


def active_accounts(session: Session) -> list[MqttAccount]:
    rows = session.scalars(
        select(MqttAccount).where(MqttAccount.revoked_at.is_(None)).order_by(MqttAccount.username)
    )
    return list(rows)


# -- the files ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerSettings:
    """Listener settings of the generated broker; kept beside the files for rewrites."""

    port: int = 1883
    bind: str | None = None  # None: every interface, so devices on the Wi-Fi reach it
    tls_port: int | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    autosave_interval: int = 5

    def check(self) -> None:
        tls = (self.tls_port, self.tls_cert, self.tls_key)
        if any(tls) and not all(tls):
            raise CredentialError("a TLS listener needs --tls-port, --tls-cert and --tls-key")
        for path in (self.tls_cert, self.tls_key):
            if path and not Path(path).is_file():
                raise CredentialError(f"TLS file {path} does not exist")
        if self.tls_port is not None and self.tls_port == self.port:
            raise CredentialError("the TLS listener needs a port of its own")


def load_settings(outdir: Path) -> BrokerSettings | None:
    path = Path(outdir) / SETTINGS_NAME
    if not path.is_file():
        return None
    return BrokerSettings(**json.loads(path.read_text(encoding="utf-8")))


def _owner_name(path: Path) -> str | None:
    try:
        return pwd.getpwuid(path.stat().st_uid).pw_name
    except KeyError:
        return None


def render_conf(
    outdir: Path, settings: BrokerSettings, limits: Any, user: str | None = None
) -> str:
    """``mosquitto.conf``; ``limits`` is the ``[broker]`` section of the hub's config."""
    outdir = Path(outdir).resolve()
    listen = f"listener {settings.port}" + (f" {settings.bind}" if settings.bind else "")
    lines = [
        "# Written by `peershop mosquitto-config`; rewritten whenever a device is added or",
        "# revoked.  Change it through that command's options, not by editing this file.",
    ]
    if user:
        # Started as root, Mosquitto becomes this user: the owner of these files, the
        # only one who may read them.
        lines.append(f"user {user}")
    lines += [
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {outdir / PASSWORD_NAME}",
        f"acl_file {outdir / ACL_NAME}",
        "",
        "# Durable: the hub's persistent session and its queue survive a broker restart.",
        "persistence true",
        f"persistence_location {outdir}/",
        f"autosave_interval {settings.autosave_interval}",
        "# Bounded ([broker] in peershop.toml): a client sending a bigger packet is",
        "# disconnected, and a client's queue past either cap drops what comes next (for the",
        "# hub: a day of a big shop's events while it is down, in a Pi's memory).",
        f"max_packet_size {limits.max_packet_size}",
        f"max_queued_messages {limits.max_queued_messages}",
        f"max_queued_bytes {limits.max_queued_bytes}",
        "max_inflight_messages 100",
        "# Nagle plus delayed ACKs turn a 0.5 ms QoS 1 round trip into 88 ms (DESIGN.md).",
        "set_tcp_nodelay true",
        "",
        "# stderr goes to journald under systemd.",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        "log_timestamp false",
        "",
        "# A session belongs to a login: each listener takes the username as the client id,",
        "# so no device can connect as the hub (or another device) and take or wipe its",
        "# session.  Mosquitto 2.0 sets this per listener, and only at start (not on reload).",
        listen,
        "use_username_as_clientid true",
    ]
    if settings.tls_port:
        lines += [
            "",
            f"listener {settings.tls_port}" + (f" {settings.bind}" if settings.bind else ""),
            "use_username_as_clientid true",
            f"certfile {Path(settings.tls_cert).resolve()}",  # type: ignore[arg-type]
            f"keyfile {Path(settings.tls_key).resolve()}",  # type: ignore[arg-type]
        ]
    if (outdir / "conf.d").is_dir():
        # the bridge to a central broker, from `peershop bridge-config` (hub/admin/sites.py)
        lines += ["", f"include_dir {outdir / 'conf.d'}"]
    return "\n".join(lines) + "\n"


def render_passwords(hub_username: str, hub_hash: str, accounts: Iterable[MqttAccount]) -> str:
    lines = [f"{hub_username}:{hub_hash}"]
    lines += [f"{a.username}:{a.password_hash}" for a in accounts]
    return "\n".join(lines) + "\n"


def render_acl(
    hub_username: str,
    accounts: Iterable[MqttAccount],
    bound: Iterable[tuple[str, str]],
    discovery_prefix: str = DISCOVERY_PREFIX,
) -> str:
    """The ACL of docs/device-protocol.md; anything not listed is denied.

    ``bound`` are the plugs ``(kind, topic)`` bound to tools, whose topics the hub reads
    (and writes, for a plug it switches); so are the plug accounts' topics.  The caller
    leaves out plugs whose topics are not theirs (:func:`plug_conflict`)."""
    accounts = list(accounts)
    plugs = {*bound, *((a.kind, a.topic) for a in accounts if a.kind != "device" and a.topic)}
    hub_lines = [line for kind, ref in sorted(plugs) for line in PLUG_KINDS[kind].hub_acl(ref)]
    lines = ["# Written by `peershop mosquitto-config`.  Not listed means denied.", ""]
    lines += [f"user {hub_username}"]
    lines += [f"topic readwrite {t}" for t in (*HUB_TOPICS, f"{discovery_prefix}/#")]
    lines += sorted(dict.fromkeys(hub_lines))
    lines += ["topic read $SYS/#", ""]
    for a in accounts:
        lines.append(f"user {a.username}")
        if a.kind == "device":
            # Events and status only: a device writing its own cmd could grant itself.
            lines += [
                f"topic write {event_topic(a.username)}",
                f"topic write {status_topic(a.username)}",
                f"topic read {cmd_topic(a.username)}",
                f"topic read {allowlist_topic(a.username)}",
                f"topic read {HUB_STATUS_TOPIC}",
            ]
        elif a.topic:
            lines += PLUG_KINDS[a.kind].acl(a.topic)
        lines.append("")
    return "\n".join(lines)


def write_atomically(path: Path, text: str, mode: int = 0o600) -> None:
    """Write via a temporary file and rename, so the broker never reads half a file.

    The file belongs to the folder's owner (the ``peershop`` user on a Pi), also when
    root writes it, so the broker running as that user can read it at the next reload.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        folder = path.parent.stat()
        if os.geteuid() == 0 and folder.st_uid != 0:
            os.chown(tmp, folder.st_uid, folder.st_gid)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def hub_login(mqtt: object) -> tuple[str, str]:
    """The hub's own username and password from config; both are required here."""
    username = getattr(mqtt, "username", None)
    password = getattr(mqtt, "password", None)
    if not username:
        raise ConfigError("mqtt.username", "is required to write a broker config")
    if not password:
        raise ConfigError("mqtt.password", "is required to write a broker config")
    if DEVICE_ID.fullmatch(username) is None and not re.fullmatch(r"[A-Za-z0-9_.-]+", username):
        raise ConfigError("mqtt.username", f"{username!r} cannot be a Mosquitto username")
    return username, password


def _fenced_plugs(
    session: Session, accounts: list[MqttAccount], discovery_prefix: str
) -> tuple[list[MqttAccount], list[tuple[str, str]]]:
    """The accounts whose ACL lines are safe to write, and the plugs ``(kind, topic)``
    bound to tools whose topics the hub may use.  A plug whose topic is reserved or
    another's (stored before peershop refused such topics) gets no ACL lines at all,
    with a warning naming it."""
    logins = [(a.username, a.kind, a.topic) for a in accounts if a.topic]
    bound = plug_bindings(session)
    safe = []
    for a in accounts:
        problem = (
            None
            if a.topic is None
            else plug_conflict(
                a.kind, a.topic, discovery_prefix, logins=logins, bound=bound, login=a.username
            )
        )
        if problem is None:
            safe.append(a)
        else:
            log.warning("plug %s may use no topic until it gets another: %s", a.username, problem)
    plugs = []
    for _tool, kind, ref in bound:
        if kind not in PLUG_KINDS or not _TOPIC_PART.fullmatch(ref):
            continue
        problem = plug_ref_problem(kind, ref, discovery_prefix)
        if problem is None:
            plugs.append((kind, ref))
        else:
            log.warning("the hub gets no ACL line for a bound plug: %s", problem)
    return safe, plugs


def write_broker_files(
    session: Session, cfg: Any, outdir: Path, settings: BrokerSettings | None = None
) -> list[Path]:
    """Write ``mosquitto.conf``, the password file and the ACL into ``outdir``.

    ``cfg`` is the hub's :class:`~hub.config.Config`: the hub's login (``mqtt``), the
    broker's limits (``broker``) and the discovery prefix (``homeassistant.prefix``).
    ``settings`` default to those saved by the previous run in ``outdir`` (so a device
    change keeps the port and TLS listener), else to port 1883 on every interface.
    """
    hub_username, hub_password = hub_login(cfg.mqtt)
    outdir = Path(outdir)
    settings = settings or load_settings(outdir) or BrokerSettings()
    settings.check()
    accounts = active_accounts(session)
    if any(a.username == hub_username for a in accounts):
        raise ConfigError(
            "mqtt.username", f"{hub_username!r} is also a device's username; rename one"
        )
    prefix = cfg.homeassistant.prefix
    fenced, bound = _fenced_plugs(session, accounts, prefix)
    outdir.mkdir(parents=True, exist_ok=True)
    files = {
        PASSWORD_NAME: render_passwords(hub_username, mosquitto_hash(hub_password), accounts),
        ACL_NAME: render_acl(hub_username, fenced, bound, prefix),
        SETTINGS_NAME: json.dumps(asdict(settings), indent=2) + "\n",
        CONF_NAME: render_conf(outdir, settings, cfg.broker, _owner_name(outdir)),
    }
    written = []
    for name, text in files.items():
        write_atomically(outdir / name, text)
        written.append(outdir / name)
    return written


def is_broker_dir(path: Path) -> bool:
    """Whether ``path`` holds files this module wrote (so a device change rewrites them)."""
    return (Path(path) / SETTINGS_NAME).is_file()


def reload_broker(outdir: Path) -> int | None:
    """SIGHUP the Mosquitto whose pid is in ``outdir/mosquitto.pid``; its pid, or None.

    Mosquitto rereads the password and ACL files on SIGHUP and drops nobody, but a
    revoked device cannot log in again.  The pid file is written by the systemd unit
    (deploy/peershop-mosquitto.service).  A stale pid is never signalled: the process
    must be a mosquitto.
    """
    pid_file = Path(outdir) / PID_NAME
    try:
        pid = int(pid_file.read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    if comm != "mosquitto":
        return None
    try:
        os.kill(pid, signal.SIGHUP)
    except (ProcessLookupError, PermissionError):
        return None
    return pid
