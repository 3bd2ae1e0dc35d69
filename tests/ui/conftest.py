"""Fixtures of the GUI tests: a fast numpy test encoder and a tiny trained workspace.

The test encoder has the real interface (:class:`ImageEncoder`: 224-px letterboxed input, a
7 x 7 grid of per-location embeddings whose mean is the embedding) but is a fixed random
projection of pooled cell intensities, so GUI flows run in milliseconds. The end-to-end
agreement and screenshot tests use the real demo encoder instead.
"""

import os

import numpy as np
import pytest

os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")

from medsae_desktop.core.encoders.base import EncodeResult, EncoderInfo, ImageEncoder  # noqa: E402


class GridEncoder(ImageEncoder):
    """Deterministic numpy encoder with the MedCLIP interface (tests only)."""

    def __init__(self, *args, **kwargs):
        rng = np.random.default_rng(0)
        self.W = rng.normal(size=(48, 512)).astype(np.float32)
        self.info = EncoderInfo(key="grid-test", variant="test", backend="numpy",
                                weights_sha256="0" * 64, label="numpy grid test encoder")
        self.closed = False

    def _encode(self, pixels_bchw, patches):
        x = pixels_bchw[:, 0]
        b = x.shape[0]
        cells = x.reshape(b, 7, 32, 7, 32).transpose(0, 1, 3, 2, 4)
        f = cells.reshape(b, 7, 7, 4, 8, 4, 8).mean(axis=(4, 6)).reshape(b, 49, 16)
        feats = np.concatenate([f, f * f, np.abs(f - f.mean(-1, keepdims=True))], -1)
        e_cell = np.maximum(feats @ self.W, 0).astype(np.float32)
        e_cell -= e_cell.mean(axis=(0, 1), keepdims=True) * 0.9
        g = e_cell.mean(1)
        n = np.linalg.norm(g, axis=1, keepdims=True) + 1e-8
        return EncodeResult((g / n).astype(np.float32),
                            (e_cell / n[:, :, None]).astype(np.float32) if patches else None)

    def close(self):
        self.closed = True


def grid_encoder_factory(key, **kwargs):
    return GridEncoder()


@pytest.fixture(scope="session")
def tiny_workspace(tmp_path_factory):
    """Phantoms → cache (test encoder, patches, labels) → trained relu SAE → report → names."""
    from medsae_desktop.core.eval.engine import EvalConfig, evaluate_job
    from medsae_desktop.core.eval.report import write_report
    from medsae_desktop.core.naming.label_namer import name_by_labels
    from medsae_desktop.core.naming.names import write_names_csv
    from medsae_desktop.core.phantoms import PhantomConfig, write_phantoms
    from medsae_desktop.core.pipeline import embed_job
    from medsae_desktop.core.progress import run_job
    from medsae_desktop.core.sae.config import TrainConfig
    from medsae_desktop.core.sae.train import train_job
    from medsae_desktop.ui.state import Workspace

    root = tmp_path_factory.mktemp("ws")
    ph = root / "phantoms"
    run_job(write_phantoms(ph, 40, seed=1, config=PhantomConfig(size=256)))
    cache = root / "cache.h5"
    run_job(embed_job(ph, cache, GridEncoder(), labels_csv=ph / "labels.csv", patches=True))
    sae = root / "sae"
    run_job(train_job(cache, sae, TrainConfig(arch="relu", d_sae=96, steps=150,
                                              batch_size=40, val_fraction=0.0,
                                              checkpoint_every=150, log_every=50)))
    res = run_job(evaluate_job(cache, sae_dir=sae, config=EvalConfig(f1=False)))
    write_report(res, root / "report", figures=False)
    names = [n for n in name_by_labels(res.corr_kc, list(res.label_names)) if n.concept]
    write_names_csv(root / "names.csv", names)
    study = sorted(ph.glob("*.png"))[0]
    return Workspace(encoder_key="grid-test", sae_dir=str(sae), cache_path=str(cache),
                     report_dir=str(root / "report"), images_root=str(ph),
                     names_csv=str(root / "names.csv"), study_path=str(study),
                     label="tiny test workspace")


@pytest.fixture
def settings(tmp_path):
    from PySide6.QtCore import QSettings

    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def window(qtbot, tmp_path, settings, monkeypatch):
    """A MainWindow with isolated settings, store and population cache; closed after."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    from medsae_desktop.ui.main_window import MainWindow

    win = MainWindow(settings=settings, store_path=str(tmp_path / "ann.sqlite"),
                     encoder_factory=grid_encoder_factory)
    qtbot.addWidget(win)
    win.resize(1400, 900)
    win.show()
    yield win
    win.close()


@pytest.fixture
def loaded_window(qtbot, window, tiny_workspace):
    """The window with the tiny workspace's models loaded (study not opened)."""
    with qtbot.waitSignal(window.models_loaded, timeout=60000):
        window.load_workspace(tiny_workspace, open_study=False)
    return window
