"""Files and folders only the hub's user may read: the database, its backups, the data dir.

The database holds every member's name and badge numbers, and a backup holds the same.
Made by hand (``peershop run`` in a home folder, a backup into a new folder) they took
the umask's modes, with Debian's 022 readable by everyone on the machine.  What peershop
makes is 0600 (files) and 0700 (folders) whatever the umask; what exists keeps the mode
its owner gave it (``deploy/install.sh`` makes ``/var/lib/peershop`` 0750 for the
``peershop`` group).  SQLite makes its ``-wal``, ``-shm`` and ``-journal`` files with
the database file's mode, so a private database keeps its side files private too.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> oct(private_file(folder / "data" / "peershop.db").stat().st_mode & 0o777)
'0o600'
>>> oct((folder / "data").stat().st_mode & 0o777)
'0o700'
"""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
FOLDER_MODE = 0o700


def private_folder(path: str | os.PathLike[str]) -> Path:
    """``path`` with every missing folder on the way made mode 0700."""
    path = Path(path)
    missing = []
    at = path
    while not at.exists():
        missing.append(at)
        at = at.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=FOLDER_MODE)
        except FileExistsError:
            continue  # another process made it meanwhile: its mode is its own
        os.chmod(folder, FOLDER_MODE)  # mkdir's mode passes through the umask
    return path


def private_file(path: str | os.PathLike[str]) -> Path:
    """``path`` made empty with mode 0600 if it does not exist (and its folder, see
    :func:`private_folder`), so that what SQLite or ``pg_dump`` writes into it later is
    never readable by others.  An existing file is left as it is."""
    path = Path(path)
    private_folder(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return path
    try:
        os.fchmod(fd, FILE_MODE)  # os.open's mode passes through the umask
    finally:
        os.close(fd)
    return path
