"""Architecture contracts (DESIGN.md §2): core never imports Qt; the CLI starts without torch."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import medsae_desktop

PKG_DIR = Path(medsae_desktop.__file__).parent


def _modules(subpackage: str) -> list[str]:
    base = PKG_DIR / subpackage.replace(".", "/")
    prefix = f"medsae_desktop.{subpackage}."
    names = [f"medsae_desktop.{subpackage}"]
    names += [m.name for m in pkgutil.walk_packages([str(base)], prefix)]
    return names


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)


def test_every_core_module_imports_with_qt_blocked():
    mods = _modules("core") + _modules("commands") + ["medsae_desktop.cli"]
    assert len(mods) > 5, mods
    code = (
        "import sys\n"
        "for name in ('PySide6', 'PySide2', 'PyQt5', 'PyQt6', 'pyqtgraph', 'shiboken6'):\n"
        "    sys.modules[name] = None  # any import of these now raises ImportError\n"
        "import importlib\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module(m)\n"
        "bad = [m for m in sys.modules if m.startswith('medsae_desktop.ui')]\n"
        "assert not bad, bad\n"
        "print('ok', len(" + repr(mods) + "))\n"
    )
    r = _run(code)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("ok")


def test_cli_help_does_not_import_heavy_libraries():
    code = (
        "import sys, contextlib, io\n"
        "from medsae_desktop import cli\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    try:\n"
        "        cli.main(['--help'])\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0\n"
        "heavy = [m for m in ('torch', 'onnxruntime', 'transformers', 'PySide6') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert 'embed' in buf.getvalue()\n"
        "print('ok')\n"
    )
    r = _run(code)
    assert r.returncode == 0, r.stderr[-3000:]


def test_every_contract_command_is_registered():
    from medsae_desktop.cli import COMMANDS

    contract = {"render", "info", "embed", "train", "eval", "name", "score-names", "inspect",
                "export-onnx", "models", "phantoms"}
    assert contract <= set(COMMANDS)
