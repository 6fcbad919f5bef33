"""Which code produced an artefact (training sets and models record it)."""

from __future__ import annotations

import subprocess

from feedstore.settings import PROJECT_ROOT


def code_version() -> str:
    """The checkout's commit; ``unknown`` outside a git checkout or without git."""
    try:
        return subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
