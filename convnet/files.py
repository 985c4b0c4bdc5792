"""Files convnet writes, and only those: atomic writes, leftovers of killed writers, a record of outputs.

Every file is written under a temporary name in its own directory and
renamed into place (:func:`atomic_path`), so a reader never sees half a
file. The temporary name carries the host and the process id of its writer,
so a leftover of a killed process can be told from anyone else's file
(:func:`remove_stale_temporaries`). A directory's ``.convnet-outputs``
records what convnet wrote there (:func:`record_output`), so that convnet
never overwrites or deletes a file it did not create.
"""
import contextlib
import errno
import hashlib
import os
import re
import secrets
import socket
import stat
import time
from pathlib import Path


#: Temporary files are named ``.<target>.convnet-<host>-<pid>-<random>.tmp<suffix>``: the pattern,
#: the host and the process id tell convnet's own leftovers (from a killed process) from anything else.
_TEMP = re.compile(r"\.(?P<target>.+)\.convnet-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{12}\.tmp.*")
#: A leftover is removed once its writer is gone and it has not changed for this long (a day when the
#: writer ran on another host sharing the directory, whose processes cannot be checked from here).
STALE_SECONDS = 600
STALE_SECONDS_OTHER_HOST = 86400


def _host_tag():
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    A reader then sees the old file or the whole new one, never half of one
    (``os.replace`` is atomic on POSIX and Windows). On any exception
    (KeyboardInterrupt included) the temporary file is removed and ``path``
    is left as it was. ``suffix`` ends the temporary name, for writers that
    infer a format from it (matplotlib, ``np.save``). The file gets the
    usual permissions the umask allows (``tempfile.mkstemp`` would make it
    0600). A process killed mid-write leaves its temporary file behind; the
    next write of the same ``path`` removes it (:func:`remove_stale_temporaries`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    while True:
        tmp = path.parent / f".{path.name}.convnet-{_host_tag()}-{os.getpid()}-{secrets.token_hex(6)}.tmp{suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def remove_stale_temporaries(path, now=None):
    """Remove the temporary files that writers of ``path`` killed mid-write left next to it.

    Only files that are certainly convnet's leftovers go: named by :func:`atomic_path`'s pattern
    for this very ``path``, regular files owned by this user, unchanged for :data:`STALE_SECONDS`,
    and written by a process of this host that no longer runs (by another host: unchanged for a
    day). Anything else, however similar its name, is left alone. Returns the paths removed.
    """
    path = Path(path)
    now = time.time() if now is None else now
    removed, host = [], _host_tag()
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP.fullmatch(entry.name)
        if match is None or match["target"] != path.name:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
            continue
        age = now - st.st_mtime
        if match["host"] == host:
            if age < STALE_SECONDS or _running(int(match["pid"])):
                continue
        elif age < STALE_SECONDS_OTHER_HOST:
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _running(pid):
    """Whether process ``pid`` exists on this host (True when that cannot be told)."""
    if pid == os.getpid():
        return True
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def os_error_message(e):
    """An OSError as one readable clause, naming the file and saying when the disk is full."""
    where = f"{e.filename}: " if getattr(e, "filename", None) else ""
    what = e.strerror or str(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        what += " (the disk is full: free some space)"
    return where + what


def directory_problem(path, writable=True):
    """Why ``path`` cannot be used (or created) as a directory to write files into, or None.

    Looks at ``path`` or, if it does not exist yet, at its nearest existing parent:
    ``"is a file, not a directory"``, ``"<parent> is a file, not a directory"``, ``"is not writable"``...
    Command-line tools call it before any work, so a bad ``--out`` is reported at once.
    """
    target = Path(os.path.abspath(path))
    probe = target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    name = "" if probe == target else f"{probe} "
    if not probe.is_dir():
        return f"{name}is a file, not a directory" if name else "is a file, not a directory"
    if writable and not os.access(probe, os.W_OK | os.X_OK):
        return f"{name}is not writable"
    return None


#: In a directory that convnet's command-line tools write their pictures into, the list of the files
#: they wrote (one name a line): only those may be written over by a later run.
OUTPUTS_MANIFEST = ".convnet-outputs"


def _recorded_outputs(directory):
    """The names listed in ``directory``'s :data:`OUTPUTS_MANIFEST` (its first MiB; none if unreadable)."""
    try:
        with open(Path(directory) / OUTPUTS_MANIFEST, "rb") as f:
            return set(f.read(1 << 20).decode("utf-8").splitlines())
    except (OSError, UnicodeDecodeError):
        return set()


def written_by_convnet(path):
    """Whether ``path`` is absent, or a file convnet's tools wrote (listed in :data:`OUTPUTS_MANIFEST`)."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return True
    return path.is_file() and path.name in _recorded_outputs(path.parent)


def record_output(path):
    """Add ``path`` to its directory's :data:`OUTPUTS_MANIFEST` (so a later run may replace it)."""
    path = Path(path)
    names = _recorded_outputs(path.parent)
    if path.name not in names:
        with atomic_path(path.parent / OUTPUTS_MANIFEST) as tmp:
            tmp.write_text("".join(f"{n}\n" for n in sorted(names | {path.name}) if n), encoding="utf-8")
