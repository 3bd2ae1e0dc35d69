"""``medsae inspect`` gives the same features, values and overlay as the viewer (demo models).

Uses the real demo workspace (demo encoder, demo SAE, RG1 study). It is built once into the
pytest cache folder (about 3 minutes on two CPU cores) and reused by later runs.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")


@pytest.fixture(scope="session")
def demo_data_home(request):
    """XDG data folder holding a built demo workspace (built on first use, then reused)."""
    from medsae_desktop.core.demo import build_demo_job
    from medsae_desktop.core.progress import run_job
    from medsae_desktop.ui.dialogs.qt_demo_dialog import demo_config

    home = Path(request.config.cache.mkdir("medsae-demo-data"))
    root = home / "medsae-desktop" / "demo"
    ws = run_job(build_demo_job(root, demo_config()))
    return home, ws


def run_cli(args, env):
    return subprocess.run([sys.executable, "-m", "medsae_desktop", *args], capture_output=True,
                          text=True, timeout=600, env=env)


def test_inspect_agrees_with_viewer(qtbot, demo_data_home, tmp_path, monkeypatch):
    home, demo = demo_data_home
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cli-cache"),
               XDG_DATA_HOME=str(tmp_path / "cli-data"))
    out_png = tmp_path / "overlay.png"
    r = run_cli(["inspect", str(demo.study_path), "--sae", str(demo.sae_dir), "--top", "10",
                 "--json", "-o", str(out_png)], env)
    assert r.returncode == 0, r.stderr[-3000:]
    cli = json.loads(r.stdout)
    assert cli["population_images"] and len(cli["features"]) >= 2
    # the viewer, same inputs, fresh annotation store and population cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "gui-cache"))
    from PySide6.QtCore import QSettings

    from medsae_desktop.ui.dialogs.qt_demo_dialog import workspace_of
    from medsae_desktop.ui.exports import render_view
    from medsae_desktop.ui.main_window import MainWindow

    win = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat),
                     store_path=str(tmp_path / "ann.sqlite"))
    qtbot.addWidget(win)
    win.show()
    with qtbot.waitSignal(win.viewer.overlay_shown, timeout=300000,
                          check_params_cb=lambda u: len(u) > 0):
        win.load_workspace(workspace_of(demo))
    v = win.viewer
    hits = v.features.hits()
    assert [h.unit for h in hits] == [f["unit"] for f in cli["features"]]
    np.testing.assert_allclose([h.activation for h in hits],
                               [f["activation"] for f in cli["features"]], rtol=1e-5)
    np.testing.assert_allclose([h.percentile for h in hits],
                               [f["percentile"] for f in cli["features"]], atol=1e-9)
    assert [h.name for h in hits] == [f["name"] for f in cli["features"]]
    assert any(not h.name.startswith("unnamed") for h in hits), "demo names expected"
    # the overlay: the viewer's export of the full image at the default window
    assert v.shown_units == cli["overlay"]["units"]
    assert v.opacity.value() / 100 == cli["overlay"]["opacity"]
    state = v.export_state()
    viewer_rgb = render_view({**state, "rect": None})
    from PIL import Image

    cli_rgb = np.asarray(Image.open(out_png).convert("RGB"))
    assert viewer_rgb.shape == cli_rgb.shape
    assert np.abs(viewer_rgb.astype(int) - cli_rgb.astype(int)).max() <= 1
    assert (cli_rgb[..., 0] != cli_rgb[..., 2]).mean() > 0.01  # a coloured overlay is there
    win.close()


def test_inspect_text_output_and_errors(demo_data_home, tmp_path):
    _, demo = demo_data_home
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "c"), XDG_DATA_HOME=str(tmp_path / "d"))
    r = run_cli(["inspect", str(demo.study_path), "--sae", str(demo.sae_dir), "--top", "3"],
                env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "research use only" in r.stdout and r.stdout.count("\n") >= 5
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\x00" * 300)
    r = run_cli(["inspect", str(bad), "--sae", str(demo.sae_dir)], env)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "bad.dcm" in r.stderr
    r = run_cli(["inspect", str(demo.study_path), "--sae", str(tmp_path / "nope")], env)
    assert r.returncode == 1 and "nope" in r.stderr
