"""The docs cannot rot: the README's "Your own data" commands run exactly as written (a new
user's path from a clone to recommendations for their own users), then every Python snippet of
the README and docs/ runs against the worker those commands started."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from recstream.core.settings import Settings
from tests.integration.ingest_helpers import delete_namespace
from tests.integration.worker_process import free_port

ROOT = Path(__file__).parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.DOTALL)


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def test_the_readme_commands_and_every_python_snippet_of_the_docs_run_as_written(
    infra: Settings, unique: str, tmp_path: Path
) -> None:
    own_data = _section((ROOT / "README.md").read_text(), "Your own data")
    [commands] = re.findall(r"```bash\n(.*?)```", own_data, flags=re.DOTALL)
    snippets = [block for path in DOCS for block in _blocks(path, "python")]
    assert len(snippets) >= 2  # the README's and docs/serving.md's at least
    scripts = []
    for n, snippet in enumerate(snippets):
        scripts.append(tmp_path / f"snippet{n}.py")
        scripts[-1].write_text(snippet)
    settings = infra.isolated(unique, qdrant_path=tmp_path / "qdrant")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    env |= settings.to_environment() | {"RECSTREAM_METRICS_PORT": str(free_port())}
    script = "\n".join(
        [
            "set -euo pipefail",
            "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT",
            commands,
            *(f"python {path}" for path in scripts),
        ]
    )
    try:
        result = subprocess.run(
            ["bash", "-c", script],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        delete_namespace(settings)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "sent 30, invalid 0, failed 0" in result.stdout
    assert "sent 157, invalid 0, failed 0" in result.stdout
    assert "ok (personalised), 10 items" in result.stdout
    assert "ok (more_like_this), 5 items" in result.stdout
    assert result.stdout.count("ok ok") == 1, result.stdout[-2000:]  # the serving snippet
