"""An installed nst (a wheel built from this tree, not an editable install) finds its defaults and presets."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_and_answers_presets_and_loads_defaults(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
                           capture_output=True, text=True, check=False)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next(wheels.glob("nst-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # The package itself from the wheel; its dependencies from this environment (no network).
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", purelib,
                    str(wheel)], check=True)
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"], "HOME": str(tmp_path / "home"),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("NST_PRETRAINED_DIR", None)
    here = tmp_path / "elsewhere"
    here.mkdir()
    probe = ("import pipeline, pipeline.config as c, pipeline.core.weights as w; "
             "cfg = c.load(); print(pipeline.__file__); print(c.CONFIG_DIR); print(w.PRETRAINED_DIR); "
             "print(cfg.optim.optimizer, cfg.image.size)")
    out = subprocess.run([str(python), "-c", probe], cwd=here, env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    package_file, config_dir, pretrained, defaults = out.stdout.strip().splitlines()[-4:]
    assert package_file.startswith(purelib), package_file  # the installed copy, not this tree
    assert config_dir.startswith(purelib) and Path(config_dir, "default.toml").is_file()
    assert pretrained == str(tmp_path / "cache" / "nst" / "pretrained_model")  # a per-user cache
    assert defaults == "lbfgs 512"
    presets = subprocess.run([str(python), "-m", "pipeline.cli", "presets"], cwd=here, env=env,
                             capture_output=True, text=True, check=False)
    assert presets.returncode == 0, presets.stderr[-3000:]
    listed = {line.split()[0] for line in presets.stdout.splitlines() if line.strip()}
    assert listed == {p.stem for p in (ROOT / "configs" / "presets").glob("*.toml")}
