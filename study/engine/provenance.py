"""What a study records about the code that ran it."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit() -> str | None:
    """The project's commit, when it runs from a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
            text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
