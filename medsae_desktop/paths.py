"""Where medsae-desktop keeps per-user data (models, demo workspace, caches) and finds the
files it ships with (``resources/``, ``models/manifest.json``).

``MEDSAE_HOME`` overrides the platform default (tests point it at a temporary folder so they
never touch the real user profile). No Qt here.
"""

import os
from pathlib import Path

import platformdirs

APP_NAME = "medsae-desktop"

_PACKAGE_DIR = Path(__file__).resolve().parent


def bundled_dir(name: str) -> Path:
    """A folder shipped with the application: ``"resources"`` or ``"models"``.

    In a source checkout (and its editable install) this is the top-level folder of that name.
    A wheel installs the same files inside the package (``pyproject.toml`` maps them to
    ``medsae_desktop/<name>``), where they are found when there is no checkout. The checkout
    is recognised by its ``pyproject.toml``, so an unrelated top-level ``resources`` folder in
    ``site-packages`` is never picked up.
    """
    checkout = _PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / name).is_dir():
        return checkout / name
    return _PACKAGE_DIR / name


def data_dir() -> Path:
    """Root of per-user data: ``$MEDSAE_HOME`` or the platform's user data folder."""
    env = os.environ.get("MEDSAE_HOME")
    root = Path(env) if env else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    root.mkdir(parents=True, exist_ok=True)
    return root


def models_dir() -> Path:
    """Folder of installed model files, one sub-folder per model name."""
    d = data_dir() / "models"
    d.mkdir(parents=True, exist_ok=True)
    return d


def cache_dir() -> Path:
    """Folder for derived, re-creatable files (e.g. ONNX exports)."""
    env = os.environ.get("MEDSAE_HOME")
    root = Path(env) / "cache" if env else Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))
    root.mkdir(parents=True, exist_ok=True)
    return root


def demo_dir() -> Path:
    """Folder of the built-in demo workspace."""
    d = data_dir() / "demo"
    d.mkdir(parents=True, exist_ok=True)
    return d
