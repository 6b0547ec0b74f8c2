"""Start `recstream worker` as a real process with a benchmark's settings (every bench does)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from recstream.core.settings import Settings


def start_worker(
    settings: Settings, log: Path, roles: str, nice: int = 0
) -> subprocess.Popen[bytes]:
    """The worker process, its settings from the environment, its output into `log`; `nice`
    lowers its CPU priority (as `nice -n` would)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    env |= settings.to_environment()
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "recstream.cli", "worker", "--roles", roles],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            preexec_fn=(lambda: os.nice(nice)) if nice else None,
        )
