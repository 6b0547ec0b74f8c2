from __future__ import annotations

import time
from pathlib import Path

from recstream.infra.process import ManagedProcess, has_exited


def test_a_just_spawned_child_counts_as_alive_before_its_command_line_shows_the_marker(
    tmp_path: Path,
) -> None:
    # Between fork and exec a child's command line is still the parent's: a marker check alone
    # would call it gone (and drop its pid file), which once left an orphan redis-server behind.
    service = ManagedProcess("svc", tmp_path / "svc.pid", tmp_path / "svc.log", "not-in-cmdline")
    child = service.spawn(["sleep", "30"])
    try:
        assert not has_exited(service, child)
        assert service.running_pid() is None  # the marker check alone disagrees
    finally:
        child.kill()
        child.wait()
    assert has_exited(service, child)


def test_stop_ends_our_process_and_removes_the_pid_file(tmp_path: Path) -> None:
    service = ManagedProcess("svc", tmp_path / "svc.pid", tmp_path / "svc.log", "sleep")
    child = service.spawn(["sleep", "30"])
    deadline = time.monotonic() + 5
    # Until the child has exec'd, its command line is ours, without the marker (see above), and
    # running_pid() would drop the pid file as stale: wait for the exec first.
    while (
        "sleep" not in Path(f"/proc/{child.pid}/cmdline").read_text()
        and time.monotonic() < deadline
    ):
        time.sleep(0.01)
    assert service.running_pid() == child.pid
    assert service.stop(timeout_s=5)
    assert child.wait(timeout=5) is not None  # it ends (stop may see it mid-exit)
    assert not service.pid_file.exists()
    assert service.stop() is False  # nothing of ours is running any more
