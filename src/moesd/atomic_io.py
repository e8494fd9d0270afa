"""Write output files all-or-nothing: a crash or a bad input never leaves a half-written file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from moesd.errors import MoesdError


def _umask_mode() -> int:
    """The mode a plain open() would give a new file (mkstemp's is always 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def check_writable(path: str | Path) -> None:
    """Before any work: the output's directory exists and is writable, and the path is not a directory."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise MoesdError(f"cannot write {target}: it is a directory")
    if not directory.is_dir():
        raise MoesdError(f"cannot write {target}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise MoesdError(f"cannot write {target}: directory {directory} is not writable")
    if target.exists() and not os.access(target, os.W_OK):
        raise MoesdError(f"cannot write {target}: the file is not writable")


def write_atomic(path: str | Path, write: Callable[[str], None]) -> None:
    """Call write(tmp_path) on a temporary file beside `path`, then rename it into place. A symlink is
    followed: the file it points at is replaced, the link stays."""
    target = Path(os.path.realpath(path)) if os.path.islink(path) else Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise MoesdError(f"cannot write {target}: directory {directory} does not exist")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, target)
    except OSError as exc:
        raise MoesdError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    write_atomic(path, write)
