"""The built-in demo workspace: everything the app needs to start with no real models.

Recipe (:class:`DemoConfig`, also described in ``resources/demo_manifest.json``):

1. synthetic chest phantoms with planted findings and their CheXpert-style ``labels.csv``
   (:mod:`medsae_desktop.core.phantoms`);
2. their embeddings with the **demo encoder** (MedCLIP ResNet-50 layout, untrained seeded
   weights) and per-location embeddings, in an HDF5 cache (:func:`~.pipeline.embed_job`);
3. a small SAE trained on that cache (:func:`~.sae.train.train_job`);
4. its evaluation report (correlation, entropy, monosemanticity; :mod:`~.eval`);
5. names from the ``labels`` namer (highest-ρ label), kept only where ρ exceeds the
   alive-by-correlation threshold 0.2 (DESIGN.md §5.3), so weak correlations stay unnamed;
6. the study: the real chest radiograph ``RG1_UNCR.dcm`` of pydicom's test data.

Everything is written under ``platformdirs.user_data_dir("medsae-desktop")/demo`` and
described by ``manifest.json``; :func:`load_demo` validates it, so a finished build is reused
and an interrupted or outdated one is rebuilt. The demo is a demonstration of the software: its
encoder is not MedCLIP and its features describe synthetic images. No Qt, no printing.
"""

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

from medsae_desktop import __version__
from medsae_desktop.core.errors import MedsaeError
from medsae_desktop.core.progress import Progress

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1
#: names with a label correlation at or below this stay unnamed (DESIGN.md §5.3 alive rule)
NAME_MIN_CORR = 0.2
DEMO_STUDY = "RG1_UNCR.dcm"


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """How the demo workspace is built (changing any field triggers a rebuild)."""

    n_phantoms: int = 160
    """Synthetic training images."""
    phantom_size: int = 384
    """Side of each phantom in pixels."""
    seed: int = 0
    """Phantom set and SAE seed."""
    arch: str = "relu"
    """SAE architecture (the paper's ReLU + L1, default λ)."""
    d_sae: int = 256
    """Dictionary size (small: the data set is small)."""
    k: int | None = None
    """Active latents per image (TopK family only)."""
    steps: int = 600
    """Optimiser steps (L0 ≈ 13, no dead units on the default phantoms)."""
    batch_size: int = 160
    """Samples per step (the whole set: few, cheap steps)."""
    recipe_version: int = 1
    """Bump when the recipe changes in a way these fields do not capture."""

    def to_json(self) -> dict[str, Any]:
        """JSON dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "DemoConfig":
        """Inverse of :meth:`to_json` (unknown keys ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def fingerprint(self) -> str:
        """Hash of the recipe (stored in the manifest)."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class DemoWorkspace:
    """Paths of a built demo workspace."""

    root: Path
    images_root: Path
    cache_path: Path
    sae_dir: Path
    report_dir: Path
    names_csv: Path
    study_path: Path
    sae_id: str
    encoder_key: str = "demo"
    build_seconds: float = 0.0


def default_demo_dir() -> Path:
    """Per-user demo folder."""
    import platformdirs

    return Path(platformdirs.user_data_dir("medsae-desktop")) / "demo"


def demo_study_path() -> Path:
    """The real chest radiograph RG1 from pydicom's test data (pydicom-data)."""
    try:
        from pydicom.data import get_testdata_file
    except ImportError as exc:  # pragma: no cover - pydicom is a base dependency
        raise MedsaeError("pydicom is not installed") from exc
    p = get_testdata_file(DEMO_STUDY)
    if p is None:
        raise MedsaeError(f"the demo study {DEMO_STUDY} is missing: install pydicom-data "
                          "(pip install pydicom-data)")
    return Path(str(p))


def _paths(root: Path) -> dict[str, Path]:
    return {"images_root": root / "phantoms", "cache_path": root / "cache.h5",
            "sae_dir": root / "sae", "report_dir": root / "report",
            "names_csv": root / "names.csv"}


def load_demo(root: str | os.PathLike[str] | None = None,
              config: DemoConfig = DemoConfig()) -> DemoWorkspace | None:
    """The demo workspace in ``root`` if it is complete and built by this recipe, else None."""
    root = Path(root) if root is not None else default_demo_dir()
    try:
        m = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if m.get("schema_version") != MANIFEST_SCHEMA_VERSION or \
            m.get("recipe") != config.fingerprint():
        return None
    p = _paths(root)
    if not all(p[k].exists() for k in p):
        return None
    try:
        cfg = json.loads((p["sae_dir"] / "cfg.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if cfg.get("sae_sha256") != m.get("sae_id") or not cfg.get("complete", False):
        return None
    if m.get("encoder_weights_sha256") != _demo_encoder_sha():
        return None
    try:
        study = demo_study_path()
    except MedsaeError:
        return None
    return DemoWorkspace(root=root, study_path=study, sae_id=str(m["sae_id"]),
                         build_seconds=float(m.get("build_seconds", 0.0)), **p)


def _demo_encoder_sha() -> str:
    # imports torch (the demo encoder's module); the demo is built and checked on workers
    from medsae_desktop.core.encoders.demo import demo_weights_sha256

    return demo_weights_sha256()


def build_demo_job(
    root: str | os.PathLike[str] | None = None,
    config: DemoConfig = DemoConfig(),
    *,
    rebuild: bool = False,
    encoder: Any = None,
) -> Generator[Progress, None, DemoWorkspace]:
    """Build (or reuse) the demo workspace; see the module docstring.

    Parameters
    ----------
    root
        Target folder (default :func:`default_demo_dir`).
    config
        Recipe.
    rebuild
        Ignore a valid existing build.
    encoder
        An already loaded demo encoder to reuse (else one is made and closed here).

    Yields
    ------
    Progress
        ``done``/``total`` in percent of the whole build, with the stage in ``message``.
    """
    root = Path(root) if root is not None else default_demo_dir()
    if not rebuild:
        ws = load_demo(root, config)
        if ws is not None:
            yield Progress(100, 100, "demo workspace ready")
            return ws
    study = demo_study_path()  # fail early, before minutes of work
    t0 = time.perf_counter()
    work = root.with_name(root.name + ".building")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    p = _paths(work)
    try:
        # 1. phantoms (0-10 %)
        from medsae_desktop.core.phantoms import PhantomConfig, write_phantoms

        gen = write_phantoms(p["images_root"], config.n_phantoms, seed=config.seed,
                             config=PhantomConfig(size=config.phantom_size))
        yield from _scaled(gen, 0, 10, "drawing synthetic phantoms")
        # 2. embeddings (10-75 %)
        yield Progress(10, 100, "loading the demo encoder")
        from medsae_desktop.core.encoders import make_encoder
        from medsae_desktop.core.pipeline import embed_job

        own = encoder is None
        enc = make_encoder("demo") if own else encoder
        try:
            gen = embed_job(p["images_root"], p["cache_path"], enc,
                            labels_csv=p["images_root"] / "labels.csv", patches=True)
            yield from _scaled(gen, 12, 75, "embedding phantoms with the demo encoder")
        finally:
            if own:
                enc.close()
        # 3. SAE (75-90 %)
        from medsae_desktop.core.sae.config import TrainConfig
        from medsae_desktop.core.sae.train import train_job

        tc = TrainConfig(arch=config.arch, d_sae=config.d_sae, k=config.k,
                         steps=config.steps, batch_size=config.batch_size, seed=config.seed,
                         val_fraction=0.0, checkpoint_every=max(config.steps, 1),
                         log_every=100)
        yield from _scaled(train_job(p["cache_path"], p["sae_dir"], tc), 75, 90,
                           "training the demo SAE")
        # 4. report (90-97 %)
        from medsae_desktop.core.eval.engine import EvalConfig, evaluate_job
        from medsae_desktop.core.eval.report import write_report

        gen = evaluate_job(p["cache_path"], sae_dir=p["sae_dir"], config=EvalConfig(f1=False))
        res = yield from _scaled(gen, 90, 97, "evaluating the demo SAE")
        write_report(res, p["report_dir"], figures=False)
        # 5. names (97-99 %)
        yield Progress(97, 100, "naming features (labels namer)")
        from medsae_desktop.core.naming.label_namer import name_by_labels
        from medsae_desktop.core.naming.names import write_names_csv

        names = [n for n in name_by_labels(res.corr_kc, list(res.label_names))
                 if n.concept and n.score > NAME_MIN_CORR]
        write_names_csv(p["names_csv"], names)
        # 6. manifest, then move into place
        sae_id = hashlib.sha256((p["sae_dir"] / "sae.safetensors").read_bytes()).hexdigest()
        seconds = time.perf_counter() - t0
        manifest = {
            "schema_version": MANIFEST_SCHEMA_VERSION,
            "kind": "medsae-demo-workspace",
            "recipe": config.fingerprint(),
            "config": config.to_json(),
            "created_by": f"medsae-desktop {__version__}",
            "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "encoder_key": "demo",
            "encoder_weights_sha256": _demo_encoder_sha(),
            "sae_id": sae_id,
            "n_named": len(names),
            "study": DEMO_STUDY,
            "build_seconds": round(seconds, 1),
            "note": "demonstration: untrained seeded encoder weights (not MedCLIP); SAE "
                    "trained on synthetic phantoms; names from the phantoms' planted labels",
        }
        (work / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        if root.exists():
            shutil.rmtree(root)
        os.replace(work, root)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    yield Progress(100, 100, "demo workspace ready")
    ws = load_demo(root, config)
    if ws is None:
        raise MedsaeError("the demo workspace was built but does not validate", root)
    return dataclasses.replace(ws, study_path=study, build_seconds=seconds)


def _scaled(gen: Generator[Progress, None, Any], lo: int, hi: int,
            stage: str) -> Generator[Progress, None, Any]:
    """Re-express a sub-job's progress as lo..hi percent of the build."""
    try:
        while True:
            p = next(gen)
            frac = (p.done / p.total) if p.total else 0.0
            yield Progress(int(lo + (hi - lo) * min(max(frac, 0.0), 1.0)), 100,
                           f"{stage} ({p.done}/{p.total})" if p.total else stage, p.metrics)
    except StopIteration as stop:
        return stop.value
    finally:
        gen.close()
