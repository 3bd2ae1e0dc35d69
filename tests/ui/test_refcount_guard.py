"""The PySide6 6.12 refcount workaround keeps heavy painting from aborting the interpreter."""

import subprocess
import sys

CODE = """
import os, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
import medsae_desktop.ui  # applies the guard
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QApplication
app = QApplication([])
img = QImage(8, 8, QImage.Format.Format_RGB32)
p = QPainter(img)
for _ in range(150_000):  # 300k void calls: enough to free None on an unguarded 3.11
    p.save()
    p.restore()
p.end()
print("ok")
"""


def test_heavy_painting_does_not_crash_the_interpreter():
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Fatal Python error" not in r.stderr
    assert r.stdout.strip() == "ok"
