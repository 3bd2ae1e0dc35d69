"""Screenshot smoke test on a real X server (Xvfb): demo study with two overlays.

Skips, saying so, only when Xvfb is not installed. The captures are kept in the test's
temporary folder (path printed) for a person to look at.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent

pytestmark = pytest.mark.xvfb


@pytest.fixture(scope="module")
def xvfb_display():
    exe = shutil.which("Xvfb")
    if exe is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb); screenshot test not run")
    for n in range(99, 140):
        if not os.path.exists(f"/tmp/.X11-unix/X{n}") and not os.path.exists(f"/tmp/.X{n}-lock"):
            break
    proc = subprocess.Popen([exe, f":{n}", "-screen", "0", "1680x1050x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if os.path.exists(f"/tmp/.X11-unix/X{n}"):
            break
        time.sleep(0.05)
    else:
        proc.terminate()
        pytest.fail("Xvfb did not start")
    yield f":{n}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def demo_workspace_json(request, tmp_path_factory):
    from medsae_desktop.core.demo import build_demo_job
    from medsae_desktop.core.progress import run_job
    from medsae_desktop.ui.dialogs.qt_demo_dialog import demo_config, workspace_of

    home = Path(request.config.cache.mkdir("medsae-demo-data"))
    demo = run_job(build_demo_job(home / "medsae-desktop" / "demo", demo_config()))
    p = tmp_path_factory.mktemp("ws") / "ws.json"
    p.write_text(workspace_of(demo).to_json())
    return p


def load(path):
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def test_demo_study_with_two_overlays_on_x(xvfb_display, demo_workspace_json, tmp_path):
    env = dict(os.environ, DISPLAY=xvfb_display, QT_QPA_PLATFORM="xcb",
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, str(HERE / "xvfb_app_script.py"), str(tmp_path),
                        str(demo_workspace_json)], env=env, capture_output=True, text=True,
                       timeout=900)
    print("screenshots in", tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Fatal Python error" not in r.stderr
    facts = json.loads((tmp_path / "facts.json").read_text())
    assert facts["platform"] == "xcb"
    assert len(facts["units"]) == 2
    shot = load(tmp_path / "screen_overlays.png")
    bare = load(tmp_path / "screen_bare.png")
    x, y, w, h = facts["view_rect"]
    view = shot[y:y + h, x:x + w]
    view_bare = bare[y:y + h, x:x + w]
    # not blank: the radiograph is there, with real grey-level structure
    assert view.std() > 20 and view.mean() > 15
    assert len(np.unique(view_bare.reshape(-1, 3), axis=0)) > 50
    # the overlays change a clear share of the canvas's pixels, in colour
    diff = np.abs(view - view_bare).sum(axis=2) > 12
    assert diff.mean() > 0.02, f"only {diff.mean():.2%} of canvas pixels changed"
    colourful = np.abs(view[..., 0] - view[..., 2]) > 25
    assert (colourful & diff).mean() > 0.01
    # bare canvas is greyscale (no stray colour outside overlays)
    assert (np.abs(view_bare[..., 0] - view_bare[..., 2]) > 25).mean() < 0.02


GRAB = """
import sys
from PySide6.QtGui import QGuiApplication
app = QGuiApplication(sys.argv[:1])
app.primaryScreen().grabWindow(0).save(sys.argv[1])
"""


def test_readme_command_opens_demo_with_overlay(xvfb_display, demo_workspace_json, request,
                                                tmp_path):
    """``medsae-desktop --demo`` (the README's command) reaches the demo study with an overlay.

    The app runs as its own process on the X server with a fresh configuration (first start);
    its demo workspace is the one built for these tests (XDG data folder), so it is reused.
    Another process grabs the X screen until the coloured overlay appears.
    """
    exe = Path(sys.executable).with_name("medsae-desktop")
    cmd = [str(exe), "--demo"] if exe.is_file() else [
        sys.executable, "-c", "from medsae_desktop.ui.app import main; raise SystemExit(main())",
        "--demo"]
    home = Path(request.config.cache.mkdir("medsae-demo-data"))
    env = dict(os.environ, DISPLAY=xvfb_display, QT_QPA_PLATFORM="xcb",
               XDG_DATA_HOME=str(home), XDG_CONFIG_HOME=str(tmp_path / "config"),
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    app = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    shot = tmp_path / "readme_command.png"
    found = False
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and app.poll() is None:
            time.sleep(3)
            subprocess.run([sys.executable, "-c", GRAB, str(shot)], env=env, timeout=60,
                           capture_output=True)
            if not shot.is_file():
                continue
            img = load(shot)
            # the middle of the canvas (window at its default 1440x900 at the top left):
            # only radiograph there, grey until an overlay is drawn
            canvas = img[300:700, 250:750]
            colourful = (np.abs(canvas[..., 0] - canvas[..., 2]) > 40).mean()
            if canvas.std() > 20 and colourful > 0.05:
                found = True
                break
    finally:
        app.terminate()
        try:
            out, _ = app.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            app.kill()
            out, _ = app.communicate()
    print("screenshot:", shot)
    assert found, f"no overlay on screen; app output:\n{out[-3000:]}"
    assert "Traceback" not in out and "Fatal Python error" not in out, out[-3000:]
