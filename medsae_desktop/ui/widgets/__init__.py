"""Widgets of the desktop app (Qt naming: the view of core object X is QtX in qt_x.py)."""
