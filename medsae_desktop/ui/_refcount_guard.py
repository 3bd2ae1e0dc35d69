"""Guard against a PySide6 6.12 reference-count bug on Python < 3.12.

PySide6-Essentials 6.12.0 returns ``None`` (from void methods such as ``QPainter.save``,
``QPainter.fillRect``, ``QPainter.setPen``, and from ``QModelIndex.data`` of an unset role) and
some ``bool`` results without taking a new reference. From Python 3.12 these singletons are
immortal and nothing happens; on 3.11 every such call decrements their reference count, and
after enough painting (tens of thousands of calls: a few minutes of use) the interpreter
aborts with ``Fatal Python error: none_dealloc`` — typically at exit, sometimes mid-session.
Reproducer: ``for _ in range(10**4): painter.save(); painter.restore()`` then compare
``sys.getrefcount(None)`` before and after.

The workaround gives ``None``, ``True``, ``False``, ``Ellipsis`` and ``NotImplemented`` a very
large reference count once, which is what Python 3.12 does by design (PEP 683 immortal
objects): these objects are never freed anyway. It only runs on CPython < 3.12 and only touches
the reference count field, the first field of every CPython object.

The same reproducer is clean on PySide6-Essentials 6.11.3 (checked 2026-11-28), so
``pyproject.toml`` excludes 6.12.0. The guard stays for environments that bring 6.12 anyway
(a shared site-packages, a later 6.12.x of unknown status); remove it when the project
requires Python 3.12.
"""

import ctypes
import logging
import platform
import sys

logger = logging.getLogger(__name__)

_BUMP = 1 << 40  # decrements needed to exhaust it: ~10^12 faulty calls
_done = False


def immortalize_singletons() -> bool:
    """Apply the workaround (idempotent); True if it was applied in this process."""
    global _done
    if _done or sys.version_info >= (3, 12) or platform.python_implementation() != "CPython":
        return _done
    for obj in (None, True, False, Ellipsis, NotImplemented):
        ctypes.c_ssize_t.from_address(id(obj)).value += _BUMP
    _done = True
    logger.debug("immortalised None/True/False (PySide6 refcount workaround)")
    return True
