"""The tree shows the layers: contracts checked by import-linter, and no TensorFlow where it is not needed."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_layer_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is a dev dependency"
    done = subprocess.run([lint, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout


PROBE = r"""
import json, sys
from typer.testing import CliRunner
from pipeline.cli import app
import pipeline.batch.driver, pipeline.batch.ray_executor, pipeline.batch.imagejob
runner = CliRunner()
codes = [runner.invoke(app, args).exit_code for args in (["--help"], ["presets"], ["status", sys.argv[1]])]
print(json.dumps({"codes": codes, "tf": sorted(m for m in ("tensorflow", "keras") if m in sys.modules)}))
"""


def test_driver_status_presets_and_help_do_not_import_tensorflow(tmp_path):
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["codes"][:2] == [0, 0], report
    assert report["tf"] == [], report
