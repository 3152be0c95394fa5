"""Files holding user data (the database, photos, videos, backups) are private to the service user.

The process umask is set to 0077 first thing, so every file the bot, the CLI or a child process
(ffmpeg) creates is private whatever umask the shell or the unit had; `secure_storage` tightens
what an older version left group/world-readable.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
PRIVATE_UMASK = 0o077


def restrict_umask() -> None:
    os.umask(PRIVATE_UMASK)


def make_private(path: Path, mode: int = PRIVATE_FILE) -> None:
    """chmod to `mode` if it differs; a file that vanished or is not ours is left as it is."""
    with contextlib.suppress(FileNotFoundError, PermissionError):
        if path.stat().st_mode & 0o777 != mode:
            os.chmod(path, mode)


def match_owner(path: Path, like: Path) -> None:
    """Run as root (an operator's `sudo neurocards restore`), give what we created the owner of
    `like` (the storage folder or the file replaced), so the service user can still write it."""
    if os.geteuid() != 0:
        return
    with contextlib.suppress(OSError):
        want, have = like.stat(), path.stat()
        if (have.st_uid, have.st_gid) != (want.st_uid, want.st_gid):
            os.chown(path, want.st_uid, want.st_gid)


def secure_storage(storage_dir: Path, extra_dirs: tuple[Path, ...] = ()) -> None:
    """Storage and its folders 0700, the files directly in them 0600 (photos, videos, databases).
    Deeper trees (sandbox scratch) are reached through a 0700 folder and need no walk."""
    for folder in (storage_dir, *extra_dirs):
        if not folder.is_dir():
            continue
        make_private(folder, PRIVATE_DIR)
        with contextlib.suppress(OSError):
            for path in folder.iterdir():
                if path.is_dir() and not path.is_symlink():
                    make_private(path, PRIVATE_DIR)
                    with contextlib.suppress(OSError):
                        for inner in path.iterdir():
                            if inner.is_file() and not inner.is_symlink():
                                make_private(inner)
                elif path.is_file() and not path.is_symlink():
                    make_private(path)
