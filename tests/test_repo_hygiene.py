"""What a Windows checkout needs of the repository itself (run from a git clone)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(),
    reason="needs a git checkout",
)


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout


def test_every_bash_script_is_checked_out_with_lf() -> None:
    """Windows runners check out CRLF unless told: bash then fails at once (`$'in\\r'`)."""
    scripts = _git("ls-files", "*.sh", ".ci/run").split()
    assert "packaging/build_exe.sh" in scripts and ".ci/run" in scripts
    attributes = _git("check-attr", "eol", "--", *scripts).splitlines()
    assert len(attributes) == len(scripts)
    assert all(line.endswith(": eol: lf") for line in attributes), attributes
