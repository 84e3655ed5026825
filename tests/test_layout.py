"""The top-level layout the project promises exists in a checkout (also a fresh clone)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = ["pipeline", "configs", "pretrained_model", "data", "output", "tests", "benchmarks"]


def test_top_level_folders_are_versioned():
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    versioned = {line.split("/", 1)[0] for line in listed.splitlines() if "/" in line}
    missing = [name for name in TOP_LEVEL if name not in versioned]
    assert not missing, f"not in the repository (a fresh clone would lack them): {missing}"
    assert (ROOT / "pyproject.toml").is_file()
