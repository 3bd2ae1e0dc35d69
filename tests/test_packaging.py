"""A wheel of the project carries every sub-package and the shipped data files.

The package list in ``pyproject.toml`` is explicit (the top-level ``resources/`` and
``models/`` folders are mapped into the package), so a new sub-package that is not listed
would silently be missing from a non-editable install. This test builds the wheel offline
with the environment's own setuptools, unpacks it outside the checkout and asks the installed
code where its stylesheet and model manifest are.
"""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _build_wheel(out: Path) -> Path:
    # Build from a clean copy: an in-tree build/ folder keeps stale files from earlier builds
    # and would hide a package that is no longer listed.
    src = out / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(out), str(src)],
        check=False, capture_output=True, text=True, cwd=out, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = out.glob("medsae_desktop-*.whl")
    return wheel


def test_wheel_has_all_packages_and_data(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())

    for init in sorted(ROOT.glob("medsae_desktop/**/__init__.py")):
        assert init.relative_to(ROOT).as_posix() in names, f"{init} missing from the wheel"
    for src, dst in (("resources", "medsae_desktop/resources"),
                     ("models", "medsae_desktop/models")):
        for f in sorted((ROOT / src).rglob("*")):
            if f.is_file():
                rel = f.relative_to(ROOT / src).as_posix()
                assert f"{dst}/{rel}" in names, f"{src}/{rel} missing from the wheel"

    # Installed copy outside any checkout: the bundled folders resolve inside the package.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("from medsae_desktop import paths; from medsae_desktop.core import models; "
            "r = paths.bundled_dir('resources'); "
            "print(r); print((r / 'style.qss').is_file()); "
            "print(models.MANIFEST_PATH); print(len(models.load_manifest()))")
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "MEDSAE_HOME": str(tmp_path / "h")}
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res_dir, has_qss, manifest, n_models = proc.stdout.split("\n")[:4]
    assert Path(res_dir) == site / "medsae_desktop" / "resources"
    assert has_qss == "True"
    assert Path(manifest) == site / "medsae_desktop" / "models" / "manifest.json"
    assert int(n_models) >= 2
