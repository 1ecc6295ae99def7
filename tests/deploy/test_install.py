"""deploy/install.sh into a temporary root, twice, and the units it installs.

The script runs for real (a venv, pip, useradd --prefix, systemctl --root) but touches
nothing outside the temporary root.  `systemd-analyze verify --root` needs a whole
systemd tree in the root, so the installed units are verified by path instead, with
/opt/peershop rebased into the temporary root: the executables checked are then the
ones the script installed, and every other path (/usr/sbin/mosquitto, /bin/sh) is the
host's.  systemd-analyze only warns (exit 0) on a bad directive, so any output fails.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from hub import systemd
from hub.admin.credentials import verify_password
from hub.config import load_config
from tests.helpers import REPO

INSTALL = REPO / "deploy" / "install.sh"
UNITS = ("peershop.service", "peershop-mosquitto.service", "peershop-agent.service")
TEMPLATES = {"peershop-bridge@.service": "peershop-bridge@ttyUSB0.service"}


def seed_root(root: Path) -> None:
    """The account files of a fresh Raspberry Pi OS, so useradd --prefix can work."""
    etc = root / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\npi:x:1000:1000::/home/pi:/bin/bash\n"
    )
    (etc / "group").write_text("root:x:0:\ndialout:x:20:pi\ngpio:x:997:pi\npi:x:1000:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\npi:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\ndialout:*::pi\ngpio:*::pi\npi:!::\n")
    os.chmod(etc / "shadow", 0o640)
    os.chmod(etc / "gshadow", 0o640)


def group_entries(root: Path) -> list[list[str]]:
    return [line.split(":") for line in (root / "etc/group").read_text().splitlines()]


def run_install(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INSTALL), "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.fixture(scope="module")
def pi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    if os.geteuid() != 0:
        pytest.skip("install.sh needs root for useradd --prefix and chown, even with --root")
    root = tmp_path_factory.mktemp("pi-root")
    seed_root(root)
    first = run_install(root)
    assert first.returncode == 0, first.stdout + first.stderr
    config_after_first = (root / "etc/peershop/peershop.toml").read_text()
    second = run_install(root)
    assert second.returncode == 0, second.stdout + second.stderr
    return {"root": root, "first": first, "second": second, "config": config_after_first}


def test_the_second_run_changes_nothing_it_should_keep(pi):
    root: Path = pi["root"]  # type: ignore[assignment]
    assert "kept (yours to edit)" in pi["second"].stdout  # type: ignore[union-attr]
    assert (root / "etc/peershop/peershop.toml").read_text() == pi["config"]
    passwd = (root / "etc/passwd").read_text().splitlines()
    assert len([line for line in passwd if line.startswith("peershop:")]) == 1
    groups = {
        line.split(":")[0]: line.split(":")[3]
        for line in (root / "etc/group").read_text().splitlines()
    }
    assert groups["gpio"].split(",").count("peershop") == 1
    assert groups["dialout"].split(",").count("peershop") == 1
    assert "pi" in groups["gpio"].split(",")  # other members stay


def test_the_venv_runs_peershop(pi):
    root: Path = pi["root"]  # type: ignore[assignment]
    peershop = root / "opt/peershop/venv/bin/peershop"
    out = subprocess.run([str(peershop), "--version"], capture_output=True, text=True, check=True)
    assert "peershop, version" in out.stdout
    wrapper = root / "usr/local/bin/peershop"
    assert wrapper.stat().st_mode & stat.S_IXOTH
    assert "runuser -u peershop" in wrapper.read_text()


def test_config_is_private_valid_and_matches_the_broker_password(pi):
    root: Path = pi["root"]  # type: ignore[assignment]
    config = root / "etc/peershop/peershop.toml"
    mode = stat.S_IMODE(config.stat().st_mode)
    assert mode == 0o640  # the hub's MQTT password is in it
    peershop_gid = int(
        next(
            line
            for line in (root / "etc/group").read_text().splitlines()
            if line.startswith("peershop:")
        ).split(":")[2]
    )
    assert config.stat().st_gid == peershop_gid
    cfg = load_config(config, env={}, search=())
    assert cfg.site.data_dir == Path("/var/lib/peershop")
    assert cfg.mqtt.username == "peershop-hub"
    assert len(cfg.mqtt.password) >= 24

    broker = root / "var/lib/peershop/broker"
    assert stat.S_IMODE(broker.stat().st_mode) == 0o700
    hashes = dict(line.split(":", 1) for line in (broker / "passwords").read_text().splitlines())
    assert verify_password(cfg.mqtt.password, hashes["peershop-hub"])
    conf = (broker / "mosquitto.conf").read_text().splitlines()
    assert "allow_anonymous false" in conf
    assert "listener 1883" in conf


def test_services_are_enabled_for_boot(pi):
    root: Path = pi["root"]  # type: ignore[assignment]
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert sorted(p.name for p in wants.iterdir()) == [
        "peershop-mosquitto.service",
        "peershop.service",
    ]
    for name in (*UNITS, *TEMPLATES):
        assert (root / "etc/systemd/system" / name).is_file()


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        # It works without systemd running; Debian ships it in the systemd package.
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "systemd"], check=True, env=env)
        found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is missing: apt-get install systemd"
    return found


def test_units_verify(pi, tmp_path: Path):
    root: Path = pi["root"]  # type: ignore[assignment]
    installed = root / "etc/systemd/system"
    files = []
    for name in (*UNITS, *TEMPLATES):
        text = (installed / name).read_text().replace("/opt/peershop/", f"{root}/opt/peershop/")
        target = tmp_path / TEMPLATES.get(name, name)
        target.write_text(text)
        files.append(str(target))
    result = subprocess.run(
        [_systemd_analyze(), "verify", "--man=no", *files], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_units_restart_on_failure_log_to_the_journal_and_have_a_watchdog():
    for name in (*UNITS, *TEMPLATES):
        text = (REPO / "deploy/systemd" / name).read_text()
        lines = set(text.splitlines())
        assert "Restart=on-failure" in lines, name
        assert "StandardError=journal" in lines, name
        assert "Type=notify" in lines, name
        if name != "peershop-mosquitto.service":  # Mosquitto sends READY=1, not pings
            assert any(line.startswith("WatchdogSec=") for line in lines), name
            assert "User=peershop" in lines, name


def test_config_template_is_valid_toml_once_filled():
    text = (REPO / "deploy/peershop.toml.in").read_text()
    filled = text.replace("@HUB_PASSWORD@", "x" * 32).replace("@TIMEZONE@", "Europe/Berlin")
    assert not re.search(r"@[A-Z_]+@", filled)
    tomllib.loads(filled)


# -- sd_notify ---------------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path):
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        yield sock, {"NOTIFY_SOCKET": str(path)}


def test_sd_notify_sends_ready_and_watchdog_to_systemd(notify_socket):
    sock, env = notify_socket
    assert systemd.ready(env=env)
    assert sock.recv(64) == b"READY=1"
    assert systemd.watchdog(env=env)
    assert sock.recv(64) == b"WATCHDOG=1"
    assert systemd.stopping(env=env)
    assert sock.recv(64) == b"STOPPING=1"


def test_sd_notify_outside_systemd_does_nothing(tmp_path: Path):
    assert systemd.ready(env={}) is False
    assert systemd.notify("READY=1", env={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}) is False


def test_watchdog_interval_is_half_of_watchdogsec_for_this_process_only():
    env = {"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}
    assert systemd.watchdog_interval(env=env) == 30.0
    assert systemd.watchdog_interval(env={**env, "WATCHDOG_PID": "1"}) is None
    assert systemd.watchdog_interval(env={}) is None


# --- trying it out: ./dev and the package (issue 17, item 8) -------------------------------


def test_the_package_declares_its_data_so_setuptools_builds_it_without_warnings(tmp_path):
    """The web view's templates and static files, and the migrations' template, are in the
    wheel, and setuptools says nothing about packages it was not told of."""
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path), "."],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    output = built.stdout + built.stderr
    assert "absent from the `packages` configuration" not in output
    assert "Package would be ignored" not in output
    [wheel] = tmp_path.glob("peershop-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    shipped = {p.relative_to(REPO).as_posix() for p in (REPO / "web").rglob("*") if p.is_file()}
    data = {n for n in shipped if n.startswith(("web/templates/", "web/static/"))}
    assert data and data <= names
    assert "hub/store/migrations/script.py.mako" in names
    assert "firmware_bridge/firmware/protocol.py" in names  # the demo's simulated nodes run it


def test_dev_says_in_one_line_when_the_test_postgresql_does_not_connect():
    env = {
        **os.environ,
        "PEERSHOP_TEST_PG": "postgresql+psycopg://nobody:secret@127.0.0.1:1/postgres",
    }
    ran = subprocess.run(
        [str(REPO / "dev"), "test", "--collect-only"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
        check=False,
    )
    assert ran.returncode != 0
    [line] = [ln for ln in ran.stderr.splitlines() if "PEERSHOP_TEST_PG" in ln and "==>" not in ln]
    assert "does not connect" in line and "127.0.0.1:1" in line
    assert "secret" not in ran.stderr  # the password is not shown
    assert "pytest on" not in ran.stderr  # it stopped before the suite


def test_dev_start_installs_what_running_needs_and_test_installs_the_test_tools():
    script = (REPO / "dev").read_text()
    start = script[script.index("  start)") : script.index("  test)")]
    tests = script[script.index("  test)") :]
    assert "setup run" in start and "setup dev" in tests
    setup = script[script.index("setup() {") : script.index("\n}\n", script.index("setup() {"))]
    assert 'pip install -q -e ".[dev]"' in setup and "pip install -q -e .\n" in setup


def test_the_demo_says_which_flag_to_use_when_its_port_is_taken(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        ran = subprocess.run(
            [str(Path(sys.executable).with_name("peershop")), "demo", "--port", str(port)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
            check=False,
        )
    assert ran.returncode != 0
    [line] = ran.stderr.strip().splitlines()
    assert f"port {port} is taken" in line and "--port" in line
