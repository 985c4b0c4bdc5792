"""convnet.files: atomic writes and the safe removal of what killed writers left behind."""
import os
import subprocess
import sys
import time

import pytest

from convnet import files as utils
from convnet.files import atomic_path, directory_problem, remove_stale_temporaries


def dead_pid():
    """The id of a process that has exited."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def leftover(directory, target, pid, age, host=None, suffix=".npz"):
    """A temporary file as atomic_path names it, last modified ``age`` seconds ago."""
    path = directory / f".{target}.convnet-{host or utils._host_tag()}-{pid}-0123456789ab.tmp{suffix}"
    path.write_bytes(b"half a file")
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_killed_writers_leftovers_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "model.npz"
    old = leftover(tmp_path, "model.npz", dead_pid(), age=3600)
    with atomic_path(target) as tmp:
        assert utils._TEMP.fullmatch(tmp.name) and f"-{os.getpid()}-" in tmp.name
        tmp.write_bytes(b"new")
    assert not old.exists()
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]


def test_only_certain_leftovers_are_removed(tmp_path):
    dead = dead_pid()
    keep = [
        leftover(tmp_path, "model.npz", dead, age=60),                       # too recent: maybe still written
        leftover(tmp_path, "model.npz", os.getpid(), age=3600),              # its writer runs (this process)
        leftover(tmp_path, "model.npz", dead, age=3600, host="0badc0de"),    # another host, less than a day
        leftover(tmp_path, "other.npz", dead, age=3600),                     # another file's
    ]
    for name in (".model.npz.backup.tmp", ".model.npz.convnet-x-1-2.tmp", "model.npz.tmp",
                 f".model.npz.convnet-{utils._host_tag()}-{dead}-0123456789ab.tmp.d"):
        path = tmp_path / name
        if name.endswith(".d"):
            path.mkdir()                                                      # not a regular file
        else:
            path.write_bytes(b"the user's")
            os.utime(path, (0, 0))
        keep.append(path)
    gone = leftover(tmp_path, "model.npz", dead + 1, age=3600, host="0badc0de")
    os.utime(gone, (0, 0))                                                   # another host, long ago
    assert remove_stale_temporaries(tmp_path / "model.npz") == [gone]
    assert all(p.exists() for p in keep)


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["metrics.json"]


def test_directory_problem(tmp_path):
    (tmp_path / "f").write_text("x")
    assert directory_problem(tmp_path) is None
    assert directory_problem(tmp_path / "new" / "deeper") is None
    assert directory_problem(tmp_path / "f") == "is a file, not a directory"
    assert directory_problem(tmp_path / "f" / "sub") == f"{tmp_path / 'f'} is a file, not a directory"


def test_only_outputs_convnet_wrote_may_be_written_over(tmp_path):
    from convnet.files import OUTPUTS_MANIFEST, record_output, written_by_convnet
    mine, theirs = tmp_path / "a.png", tmp_path / "b.png"
    assert written_by_convnet(mine)                       # absent: free
    mine.write_bytes(b"png")
    theirs.write_bytes(b"png")
    assert not written_by_convnet(mine) and not written_by_convnet(theirs)
    record_output(mine)
    assert written_by_convnet(mine) and not written_by_convnet(theirs)
    assert (tmp_path / OUTPUTS_MANIFEST).read_text() == "a.png\n"


def test_os_error_message_names_the_file_and_a_full_disk():
    import errno

    from convnet.files import os_error_message
    assert os_error_message(OSError(errno.EACCES, "Permission denied", "/x/y")) == "/x/y: Permission denied"
    assert os_error_message(OSError(errno.ENOSPC, "No space left on device")) == \
        "No space left on device (the disk is full: free some space)"
    assert os_error_message(OSError("plain")) == "plain"


def test_the_old_home_of_these_helpers_still_serves_them():
    from convnet import files, shapes, utils as old
    assert old.atomic_path is files.atomic_path and old.record_output is files.record_output
    assert old.pad_amounts is shapes.pad_amounts and old.normalize_tuple is shapes.normalize_tuple
