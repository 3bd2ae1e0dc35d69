"""Entry point of ``medsae-desktop``: ``medsae-desktop [FILE] [--demo]``.

With no real models configured (first start), the app opens on the built-in demo workspace,
building it with a progress dialog the first time. ``FILE`` (DICOM/PNG/JPEG) is opened in
the viewer. Logging is configured here and nowhere at import time.
"""

import argparse
import logging
import os
import sys
from collections.abc import Sequence


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="medsae-desktop",
        description="MedSAE Desktop: SAE features of chest-radiograph models (research use "
                    "only, not for diagnosis).")
    p.add_argument("file", nargs="?", help="study to open (DICOM, PNG or JPEG)")
    p.add_argument("--demo", action="store_true",
                   help="start on the built-in demo workspace (built on first use)")
    p.add_argument("--rebuild-demo", action="store_true",
                   help="rebuild the demo workspace from scratch")
    p.add_argument("--debug", action="store_true", help="debug logging")
    return p.parse_args(argv)


def reserve_gui_core() -> None:
    """Leave one CPU core to the GUI thread: compute libraries (torch/OpenMP, loaded later by
    worker jobs) get one thread fewer than there are cores, unless the user chose a count.

    Measured on 2 cores: with 2 OpenMP threads a training job delayed the event loop by up
    to ~0.5 s (and trained slower, threads fighting); with 1 it stays near the 10 ms timer.
    Must run before torch is imported.
    """
    n = max(1, (os.cpu_count() or 2) - 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    os.environ.setdefault("MKL_NUM_THREADS", str(n))


def _no_display() -> bool:
    """True on Linux/BSD when no X11/Wayland display is reachable and no Qt platform is forced."""
    if not sys.platform.startswith(("linux", "freebsd")) or os.environ.get("QT_QPA_PLATFORM"):
        return False
    return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def main(argv: Sequence[str] | None = None) -> int:
    """Start the GUI; returns the exit code."""
    reserve_gui_core()
    args = _parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")
    if _no_display():
        # Qt would abort with a multi-line plugin error; say it in one line instead.
        print("medsae-desktop: error: no display found (DISPLAY/WAYLAND_DISPLAY unset); on a "
              "headless machine run it on a virtual screen: xvfb-run -a medsae-desktop --demo",
              file=sys.stderr)
        return 1
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from medsae_desktop.ui.main_window import MainWindow
    from medsae_desktop.ui.theme import apply_theme

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("medsae-desktop")
    app.setOrganizationName("medsae-desktop")
    app.setApplicationDisplayName("MedSAE Desktop")
    apply_theme(app)
    win = MainWindow()
    win.show()
    study = os.path.abspath(args.file) if args.file else None
    if args.rebuild_demo:
        QTimer.singleShot(0, lambda: win.start_demo(rebuild=True, study=study))
    else:
        QTimer.singleShot(0, lambda: win.start_up(study, demo=args.demo))
    return int(app.exec())


if __name__ == "__main__":
    raise SystemExit(main())
