"""The desktop application (PySide6 + pyqtgraph). Imports core, never torch directly."""

from medsae_desktop.ui._refcount_guard import immortalize_singletons

# before any Qt call: see _refcount_guard (PySide6 6.12 + Python 3.11 refcount bug)
immortalize_singletons()
