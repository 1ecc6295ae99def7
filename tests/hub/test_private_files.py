"""Issue 13, item 15: the database, its SQLite side files, its backups and the folders
peershop makes are the hub user's alone (0600 and 0700), whatever the umask.

Set up by hand (`peershop run` in a home folder, a backup into a new folder), they took
the umask's modes: with Debian's 022, a database and backups anyone on the machine could
read, with every member's name and badge number in them.
"""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hub.private_files import private_file, private_folder
from hub.service.broker import free_port
from hub.store.db import make_engine, migrate
from tests.helpers import HubProcess, peershop_command


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def umask(value: int) -> Iterator[None]:
    """A careless umask for this process and the commands it starts."""
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def test_private_folder_and_file_whatever_the_umask(tmp_path: Path):
    with umask(0o000):
        file = private_file(tmp_path / "a" / "b" / "peershop.db")
    assert mode(tmp_path / "a") == mode(tmp_path / "a" / "b") == 0o700
    assert mode(file) == 0o600 and file.stat().st_size == 0
    with umask(0o277):  # a umask that would take the owner's write away
        private_folder(tmp_path / "c")
        private_file(tmp_path / "c" / "f")
    assert (mode(tmp_path / "c"), mode(tmp_path / "c" / "f")) == (0o700, 0o600)
    # what exists keeps the mode its owner gave it (deploy/install.sh's 0750, a 0640 file)
    (tmp_path / "given").mkdir(mode=0o750)
    os.chmod(tmp_path / "given", 0o750)
    (tmp_path / "given" / "f").write_text("kept")
    os.chmod(tmp_path / "given" / "f", 0o640)
    private_file(tmp_path / "given" / "f")
    assert (mode(tmp_path / "given"), mode(tmp_path / "given" / "f")) == (0o750, 0o640)
    assert (tmp_path / "given" / "f").read_text() == "kept"


@pytest.mark.sqlite_only("the modes of SQLite's own database, -wal and -shm files")
def test_a_hub_started_by_hand_keeps_its_data_dir_private(tmp_path: Path, broker):
    data = tmp_path / "home" / "peershop-data"  # none of it exists yet
    config = tmp_path / "peershop.toml"
    config.write_text(  # db.url left to its default: <data_dir>/peershop.db
        f'[site]\ndata_dir = "{data}"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n'
        f'client_id = "peershop-hub-{uuid.uuid4().hex[:8]}"\n'
        f'[http]\nlisten = "127.0.0.1:{free_port()}"\n'
    )
    with umask(0o000):
        hub = HubProcess(config, tmp_path / "hub.log")
        hub.start(broker.port)
    try:
        # while the hub runs, SQLite's write-ahead log and shared memory are there too
        files = {p.name: mode(p) for p in data.iterdir()}
        assert {"peershop.db", "peershop.db-wal", "peershop.db-shm"} <= set(files), files
        assert set(files.values()) == {0o600}, files
        assert mode(data) == mode(data.parent) == 0o700
    finally:
        assert hub.terminate() == 0


def test_backups_and_a_restored_database_are_private(db_url: str, tmp_path: Path):
    engine = make_engine(db_url)
    migrate(engine)
    engine.dispose()
    config = tmp_path / "peershop.toml"
    config.write_text(f'[site]\ndata_dir = "{tmp_path / "data"}"\n[db]\nurl = "{db_url}"\n')
    backups = tmp_path / "backups" / "nightly"
    with umask(0o000):
        made = peershop_command(config, "backup", str(backups / "peershop.backup"))
    assert made.returncode == 0, made.stderr
    assert mode(backups.parent) == mode(backups) == 0o700
    assert mode(backups / "peershop.backup") == 0o600
    if not db_url.startswith("sqlite"):
        return
    # a restore onto a new machine: the database file is made by the restore
    moved = tmp_path / "new-pi"
    moved.mkdir()
    config.write_text(f'[db]\nurl = "sqlite:///{moved / "peershop.db"}"\n')
    with umask(0o000):
        done = peershop_command(config, "restore", str(backups / "peershop.backup"), "--yes")
    assert done.returncode == 0, done.stderr
    assert mode(moved / "peershop.db") == 0o600
