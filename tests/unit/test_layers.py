"""The layer contract (`make lint`, docs/architecture.md) fails the build on an import against
the plan: run import-linter on a copy of the package with one such import added."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _lint_copy(
    tmp_path: Path, upward_import: tuple[str, str] | None
) -> subprocess.CompletedProcess[str]:
    shutil.copytree(
        ROOT / "recstream",
        tmp_path / "recstream",
        symlinks=False,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    if upward_import is not None:
        module, statement = upward_import
        path = tmp_path / module
        path.write_text(path.read_text() + f"\n{statement}  # noqa\n")
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_package_as_it_is_keeps_the_layers(tmp_path: Path) -> None:
    result = _lint_copy(tmp_path, None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "statement", "named"),
    [
        (
            "recstream/infra/topics.py",
            "from recstream.streams import session",
            "recstream.infra is not allowed to import recstream.streams",
        ),
        (
            "recstream/streams/catalog.py",
            "from recstream.consumers import ranking",
            "recstream.streams is not allowed to import recstream.consumers",
        ),
        (
            "recstream/core/settings.py",
            "from recstream.schemas import events",
            "recstream.core is not allowed to import recstream.schemas",
        ),
    ],
)
def test_an_import_against_the_plan_breaks_the_contract(
    tmp_path: Path, module: str, statement: str, named: str
) -> None:
    result = _lint_copy(tmp_path, (module, statement))
    assert result.returncode != 0
    assert named in " ".join(result.stdout.split())
