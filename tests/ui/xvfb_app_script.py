"""Run by test_screenshot_xvfb.py in a subprocess on an X server (not collected as a test).

argv: OUT_DIR WORKSPACE_JSON. Opens the demo study in the real window, shows two overlays,
captures the X screen with and without overlays, and writes facts.json.
"""

import json
import os
import sys
import time
from pathlib import Path

from PySide6.QtCore import QEventLoop, QSettings, QTimer
from PySide6.QtWidgets import QApplication

from medsae_desktop.ui.main_window import MainWindow
from medsae_desktop.ui.state import Workspace
from medsae_desktop.ui.theme import apply_theme


def wait(signal=None, ms=120000, check=None):
    loop = QEventLoop()
    if signal is not None:
        def on(*args):
            if check is None or check(*args):
                loop.quit()
        signal.connect(on)
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def main() -> int:
    out = Path(sys.argv[1])
    ws = Workspace.from_json(Path(sys.argv[2]).read_text())
    app = QApplication(sys.argv[:1])
    apply_theme(app)
    win = MainWindow(settings=QSettings(str(out / "s.ini"), QSettings.Format.IniFormat),
                     store_path=str(out / "ann.sqlite"))
    win.resize(1600, 960)
    win.move(0, 0)
    win.show()
    t0 = time.perf_counter()
    win.load_workspace(ws)
    v = win.viewer
    wait(v.overlay_shown, check=lambda u: len(u) > 0)
    units = [h.unit for h in v.features.hits()[:2]]
    v.features.select_units(units)
    wait(v.overlay_shown, 60000, check=lambda u: u == units)
    wait(None, 800)  # let the X server paint
    screen = app.primaryScreen()
    screen.grabWindow(0).save(str(out / "screen_overlays.png"))
    win.grab().save(str(out / "window_overlays.png"))
    geo = v.view.graphics.geometry()
    top_left = v.view.graphics.mapTo(win, v.view.graphics.rect().topLeft())
    win.tabs.setCurrentWidget(win.features_tab)
    wait(win.features_tab.gallery_ready, 30000)
    wait(None, 500)
    screen.grabWindow(0).save(str(out / "screen_features.png"))
    win.tabs.setCurrentWidget(win.viewer)
    v.set_overlay_visible(False)
    wait(None, 800)
    screen.grabWindow(0).save(str(out / "screen_bare.png"))
    facts = {"units": units, "names": [v.state.display_name(u) for u in units],
             "view_rect": [win.geometry().x() + top_left.x(), win.geometry().y() + top_left.y(),
                           geo.width(), geo.height()],
             "platform": app.platformName(), "seconds": time.perf_counter() - t0,
             "open_to_overlay_s": v.open_to_overlay_s}
    (out / "facts.json").write_text(json.dumps(facts))
    win.close()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")
    raise SystemExit(main())
