"""Desktop-app benchmark: GUI responsiveness while training, and study-to-overlay time.

1. Event-loop latency: a 10 ms ``QTimer`` records the gaps between its ticks while the Trainer
   tab trains an SAE on the demo cache (paper defaults: ReLU, expansion 16 → 8192 units,
   batch clamped to the cache) for ``--train-seconds``. The worst gap is the longest time the
   GUI thread could not react (goal < 100 ms).
2. Open-study-to-overlay: with the demo models already loaded, the time from
   ``viewer.open_study(RG1)`` (1955 x 1841 CR) to the first overlay displayed (read on a worker,
   shown, encoder + SAE on a worker, top feature selected, its overlay computed on a worker and
   shown; goal ≤ 1.5 s). The worst event-loop gap during those opens is reported too.

Runs offscreen. Appends a dated entry to ``benchmarks/RESULTS.md`` under
"## Desktop app (bench_ui.py)" with ``--record``.

Usage: ``python benchmarks/bench_ui.py [--runs 5] [--train-seconds 20] [--record]``
"""

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")
from medsae_desktop.ui.app import reserve_gui_core  # noqa: E402  (as the app does, first)

reserve_gui_core()

SECTION = "## Desktop app (bench_ui.py)"


class Probe:
    """10 ms timer recording event-loop gaps (wall time between ticks) and the GUI thread's
    own CPU time between ticks (``time.thread_time``): a long gap with little CPU is the
    operating system running other processes' threads (a shared machine), a long gap with
    as much CPU is work the GUI thread itself did."""

    def __init__(self):
        from PySide6.QtCore import QTimer

        self.gaps: list[float] = []
        self.cpu: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)
        self.last = 0.0
        self.last_cpu = 0.0

    def _tick(self):
        now = time.perf_counter()
        cpu = time.thread_time()
        self.gaps.append(now - self.last)
        self.cpu.append(cpu - self.last_cpu)
        self.last = now
        self.last_cpu = cpu

    def start(self):
        self.gaps, self.cpu = [], []
        self.last = time.perf_counter()
        self.last_cpu = time.thread_time()
        self.timer.start()

    def stop(self):
        self.timer.stop()
        return list(self.gaps)


def spin(ms):
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(int(ms), loop.quit)
    loop.exec()


def wait_for(signal, check=None, timeout_ms=600000):
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    got = []

    def on(*args):
        if check is None or check(*args):
            got.append(args)
            loop.quit()

    signal.connect(on)
    QTimer.singleShot(timeout_ms, loop.quit)
    loop.exec()
    signal.disconnect(on)
    if not got:
        raise TimeoutError("signal not received")
    return got[0]


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--train-seconds", type=float, default=20.0)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    load_before = os.getloadavg()

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from medsae_desktop.core.demo import build_demo_job
    from medsae_desktop.core.progress import run_job
    from medsae_desktop.ui.dialogs.qt_demo_dialog import demo_config, workspace_of
    from medsae_desktop.ui.main_window import MainWindow
    from medsae_desktop.ui.theme import apply_theme

    app = QApplication(sys.argv[:1])
    apply_theme(app)
    demo = run_job(build_demo_job(None, demo_config()))
    tmp = Path(tempfile.mkdtemp(prefix="bench_ui-"))
    os.environ["XDG_CACHE_HOME"] = str(tmp / "cache")
    win = MainWindow(settings=QSettings(str(tmp / "s.ini"), QSettings.Format.IniFormat),
                     store_path=str(tmp / "ann.sqlite"))
    win.resize(1500, 920)
    win.show()
    probe = Probe()
    t = time.perf_counter()
    win.load_workspace(workspace_of(demo), open_study=False)
    wait_for(win.models_loaded)
    load_s = time.perf_counter() - t
    v = win.viewer
    study = str(demo.study_path)

    # ---- 2. open → overlay, models loaded ------------------------------------------------
    opens, open_gaps, open_cpu = [], [], []
    for i in range(args.runs + 1):
        probe.start()
        v.open_study(study)
        wait_for(v.overlay_shown, lambda u: len(u) > 0)
        gaps = probe.stop()
        spin(300)
        if i == 0:
            continue  # warm-up (first inference allocates)
        opens.append(v.open_to_overlay_s)
        open_gaps.append(max(gaps) if gaps else float("nan"))
        open_cpu.append(max(probe.cpu) if probe.cpu else float("nan"))

    # ---- 1. latency while training -------------------------------------------------------
    tp = win.trainer_tab
    win.tabs.setCurrentWidget(tp)
    tp.set_cache_path(str(demo.cache_path))
    spin(500)
    tp.out_edit.setText(str(tmp / "bench-sae"))
    tp.reset_defaults()
    tp.steps = 100000
    tp.start()
    wait_for(tp.curves_updated, lambda n: n >= 2)
    spin(2000)  # past the trainer's start-up
    probe.start()
    spin(args.train_seconds * 1000)
    train_gaps = probe.stop()
    train_cpu = list(probe.cpu)
    rate = tp.rate.text()
    n_points = len(tp.points["loss"])
    tp.cancel()
    wait_for(tp.training_ended)
    win.close()
    load_after = os.getloadavg()

    worst = max(train_gaps) * 1000
    lines = [
        f"### {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- command: `python benchmarks/bench_ui.py --runs {args.runs} --train-seconds "
        f"{args.train_seconds:g}` (offscreen Qt)",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical "
        f"cores, {platform.system()} {platform.release()}",
        f"- load average (1/5/15 min): {' / '.join(f'{x:.2f}' for x in load_before)} before, "
        f"{' / '.join(f'{x:.2f}' for x in load_after)} after (the machine is shared)",
        f"- compute threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} (the app "
        "reserves one core for the GUI)",
        f"- software: Python {platform.python_version()}, PySide6 "
        f"{__import__('PySide6').__version__}, pyqtgraph {__import__('pyqtgraph').__version__}",
        f"- demo models: demo encoder (torch, CPU, fp32), SAE {win.state.sae and ''}"
        f"{demo.sae_id[:12]} (256 units); model loading took {load_s:.1f} s",
        "",
        "| measure | result | goal |",
        "|---|---|---|",
        f"| event-loop worst gap while training (10 ms timer, {args.train_seconds:g} s, "
        f"{len(train_gaps)} ticks) | **{worst:.0f} ms** (p99 {pct(train_gaps, .99) * 1000:.0f} "
        f"ms, median {statistics.median(train_gaps) * 1000:.0f} ms) | < 100 ms |",
        f"| GUI-thread CPU time between two ticks while training, worst (own work; the rest "
        f"of a gap is the OS running other threads) | **{max(train_cpu) * 1000:.0f} ms** "
        f"(p99 {pct(train_cpu, .99) * 1000:.0f} ms) | < 100 ms |",
        f"| training throughput during the probe ({n_points} logged points) | {rate} | — |",
        f"| open RG1 (1955×1841) → overlay shown, models loaded, {args.runs} runs | "
        f"**median {statistics.median(opens):.2f} s**, min {min(opens):.2f} s, max "
        f"{max(opens):.2f} s | ≤ 1.5 s |",
        f"| event-loop worst gap during those opens | {max(open_gaps) * 1000:.0f} ms (GUI-thread "
        f"CPU worst {max(open_cpu) * 1000:.0f} ms) | < 100 ms |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.record:
        _record(text)
    return 0


def _record(entry: str) -> None:
    path = Path(__file__).with_name("RESULTS.md")
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    if SECTION not in old:
        new = old.rstrip("\n") + f"\n\n{SECTION}\n\n{entry}"
    else:
        start = old.index(SECTION) + len(SECTION)
        nxt = old.find("\n## ", start)
        end = len(old) if nxt < 0 else nxt
        body = old[start:end].rstrip("\n")
        new = old[:start] + body + "\n\n" + entry + old[end:]
    path.write_text(new if new.endswith("\n") else new + "\n", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
