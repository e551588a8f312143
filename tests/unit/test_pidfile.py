"""Pid files name one process: a pid reused by another process since is never taken for it (``ivr down``
and the test stacks signal whole process groups by these pids)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ivr.devtools.stack import read_pidfile, remove_pidfile, write_pidfile


def test_a_running_process_is_found_by_its_pid_file(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        write_pidfile(tmp_path / "x.pid", proc.pid)
        assert (tmp_path / "x.pid").read_text() == str(proc.pid)     # the pid alone, as other tools read it
        assert read_pidfile(tmp_path / "x.pid") == proc.pid
    finally:
        proc.kill()
        proc.wait()
    assert read_pidfile(tmp_path / "x.pid") is None                   # gone: no pid


def test_a_pid_now_held_by_another_process_is_not_taken(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        write_pidfile(tmp_path / "x.pid", proc.pid)
        # the same pid with another start time: what a reused pid looks like
        (tmp_path / "x.pid.start").write_text("1")
        assert read_pidfile(tmp_path / "x.pid") is None
    finally:
        proc.kill()
        proc.wait()


def test_a_missing_or_broken_pid_file_is_no_pid(tmp_path: Path) -> None:
    assert read_pidfile(tmp_path / "none.pid") is None
    (tmp_path / "bad.pid").write_text("not a pid")
    assert read_pidfile(tmp_path / "bad.pid") is None


def test_removing_a_pid_file_removes_its_start_time_too(tmp_path: Path) -> None:
    write_pidfile(tmp_path / "x.pid", 1)
    remove_pidfile(tmp_path / "x.pid")
    assert list(tmp_path.iterdir()) == []


def test_a_deep_workdir_gets_a_control_socket_path_asterisk_can_bind(tmp_path: Path) -> None:
    from ivr.asterisk.conf import AsteriskDirs

    deep = tmp_path / ("d" * 60) / "nodes" / "node1" / "asterisk"
    dirs = AsteriskDirs.under(deep / "etc", deep)
    assert len(str(dirs.run / "asterisk.ctl")) <= 100
    assert dirs.run == AsteriskDirs.under(deep / "etc", deep).run        # the same workdir, the same folder
    short = AsteriskDirs.under(tmp_path / "etc", tmp_path)
    assert short.run == tmp_path / "run"                                  # a short one keeps its own
