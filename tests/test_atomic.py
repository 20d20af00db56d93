"""Atomic writes: all or nothing, and nothing left behind."""

import os

import pytest

from mlm_lessons.atomic import atomic_path


def test_success_replaces_the_file_with_normal_permissions(tmp_path):
    target = tmp_path / "sub" / "file.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert os.listdir(target.parent) == ["file.txt"]
    assert target.stat().st_mode & 0o044, "readable by others, like any file written with open()"


def test_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["file.txt"]


def killed_while_writing(target) -> None:
    """A real process that dies by SIGKILL inside ``atomic_path``: no ``finally`` runs, the temporary stays."""
    import signal
    import subprocess
    import sys

    code = ("import os, signal, sys\nfrom mlm_lessons.atomic import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n    tmp.write_text('half')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    result = subprocess.run([sys.executable, "-c", code, str(target)])
    assert result.returncode == -signal.SIGKILL


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
def test_a_temporary_left_by_a_killed_process_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "last.pt"
    target.write_text("good")
    killed_while_writing(target)
    assert target.read_text() == "good" and len(list(tmp_path.glob(".last.pt.*.tmp"))) == 1
    with atomic_path(target) as tmp:
        tmp.write_text("better")
    assert sorted(os.listdir(tmp_path)) == ["last.pt"] and target.read_text() == "better"


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
def test_a_running_writers_temporary_is_left_alone(tmp_path):
    from mlm_lessons.atomic import remove_stale_temporaries

    killed_while_writing(tmp_path / "a.wav")
    live = tmp_path / f".b.wav.{os.getpid()}.tmp"        # this process is alive: a write in progress
    live.write_text("in progress")
    removed = remove_stale_temporaries(tmp_path)
    assert [path.name.split(".")[1] for path in removed] == ["a"] and live.exists()
