"""Atomic file writes: a target is either its old content or the complete new one, never a fragment.

Every file esr writes goes through `atomic_write`: the data lands in a hidden temporary file beside
the target, named `.NAME.esr-PID-RANDOM.tmp`, which is renamed over the target once complete and
removed if anything fails. A process killed outright (SIGKILL, power loss) cannot clean up, so
`remove_stale_partials` deletes such files whose writer no longer runs; the PID in the name
tells, and nothing but that exact pattern is ever touched.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL = re.compile(r"^\..+\.esr-(?P<pid>\d+)-[A-Za-z0-9_]+\.tmp(\.[A-Za-z0-9]+)?$")


def umask() -> int:
    """The process umask, read without changing it where the platform allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # the only portable way to read it; restored at once
    os.umask(mask)
    return mask


def new_file_mode(target: Path) -> int:
    """The mode a plain open() would give the target (mkstemp makes private 0600 files)."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~umask()


@contextmanager
def atomic_write(target: str | os.PathLike[str], *, keep_suffix: bool = False, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on a clean exit it replaces `target`, else it is deleted.

    `keep_suffix` ends the temporary name with the target's suffix, for writers that pick their
    format from the name (ffmpeg).
    """
    target = Path(target)
    suffix = ".tmp" + (target.suffix if keep_suffix else "")
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.esr-{os.getpid()}-", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, new_file_mode(target))
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process
    return True


def remove_stale_partials(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete `folder`'s esr temporary files whose writing process is gone; return what was removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = PARTIAL.match(entry.name)
        if match and entry.is_file(follow_symlinks=False) and not pid_alive(int(match.group("pid"))):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed
