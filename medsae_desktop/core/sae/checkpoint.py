"""SAE checkpoint folder, schema 1 (DESIGN.md §4.2): save, validating load, migrations.

Layout of ``SAE_DIR/``:

=====================  =====================================================================
file                   content
=====================  =====================================================================
``sae.safetensors``    float32 tensors, names and orientation as SAELens:
                       ``W_enc`` (d_in, d_sae), ``b_enc`` (d_sae), ``W_dec`` (d_sae, d_in),
                       ``b_dec`` (d_in), ``input_mean`` (d_in), optional ``threshold``
                       (d_sae; required for batchtopk/jumprelu/matryoshka).
                       Header metadata: ``{"schema_version": "1"}`` only (one key, so the
                       bytes -- and hence the SAE id -- are deterministic).
``cfg.json``           ``schema_version``, ``arch``, ``d_in``, ``d_sae``, ``k``, ``l1``,
                       ``input_scale``, ``encoder`` (from the cache), ``train`` (full
                       TrainConfig), ``metrics`` (final), ``created_by``, ``complete`` and
                       ``sae_sha256`` (the id of the weights it belongs to).
``train_log.jsonl``    written by the trainer, one JSON line per logged step (optional).
``resume/``            trainer state for ``--resume`` (optional; never needed for inference).
=====================  =====================================================================

Writes are crash-safe: a new folder is written under a temporary name and renamed into place;
an existing folder gets each file written to a temporary name and ``os.replace``-d, weights
first, ``cfg.json`` last. ``cfg.json`` records the sha256 of the weights it describes, so a kill
between the two renames is detected on load instead of silently pairing the wrong config.

This module needs numpy and safetensors only (no torch): the clinician install loads SAEs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medsae_desktop import __version__
from medsae_desktop.core.errors import MedsaeError
from medsae_desktop.core.sae.runtime import ARCHS, SAE, THRESHOLD_ARCHS

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
CFG_NAME = "cfg.json"
WEIGHTS_NAME = "sae.safetensors"
LOG_NAME = "train_log.jsonl"
RESUME_DIR = "resume"
CREATED_BY = f"medsae-desktop {__version__}"

#: ``from_version -> fn(cfg, tensors) -> (cfg, tensors)`` upgrading one step. Loading applies
#: them in order up to :data:`SCHEMA_VERSION`. Empty while schema 1 is the only one; a
#: breaking change adds ``_MIGRATIONS[1] = _migrate_v1_to_v2`` and a fixture test.
_Migration = Callable[[dict[str, Any], dict[str, np.ndarray]],
                      tuple[dict[str, Any], dict[str, np.ndarray]]]
_MIGRATIONS: dict[int, _Migration] = {}


# ---- writing ---------------------------------------------------------------------------------
def serialize_tensors(tensors: Mapping[str, np.ndarray]) -> bytes:
    """The exact ``sae.safetensors`` bytes for ``tensors`` (float32, C-contiguous)."""
    from safetensors.numpy import save

    arrays = {name: np.ascontiguousarray(arr, dtype=np.float32) for name, arr in tensors.items()}
    return save(arrays, metadata={"schema_version": str(SCHEMA_VERSION)})


def _json_default(obj: object) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_sae(
    sae_dir: str | os.PathLike[str],
    tensors: Mapping[str, np.ndarray],
    cfg: Mapping[str, Any],
) -> Path:
    """Write an SAE checkpoint folder atomically (see the module docstring).

    Parameters
    ----------
    sae_dir
        Destination folder; created if missing. Other files in an existing folder
        (``train_log.jsonl``, ``resume/``) are left alone.
    tensors
        ``W_enc``, ``b_enc``, ``W_dec``, ``b_dec``, ``input_mean`` and, for threshold
        architectures, ``threshold`` (numpy, any float dtype; stored as float32).
    cfg
        At least ``arch``, ``d_in``, ``d_sae``, ``input_scale``. ``schema_version``,
        ``created_by``, ``complete`` (default True) and ``sae_sha256`` are filled in.

    Returns
    -------
    pathlib.Path
        The folder.
    """
    sae_dir = Path(sae_dir)
    blob = serialize_tensors(tensors)
    full = {
        "schema_version": SCHEMA_VERSION,
        "k": None,
        "l1": None,
        "complete": True,
        "created_by": CREATED_BY,
        **dict(cfg),
    }
    full["schema_version"] = SCHEMA_VERSION
    full["sae_sha256"] = hashlib.sha256(blob).hexdigest()
    # Validate before touching the disk: never write a checkpoint we would refuse to load.
    _validate(full, {k: np.asarray(v, np.float32) for k, v in tensors.items()}, sae_dir)
    cfg_bytes = (json.dumps(full, indent=2, sort_keys=True, default=_json_default,
                            allow_nan=False) + "\n").encode()

    if not sae_dir.exists():
        sae_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = sae_dir.with_name(f".{sae_dir.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp_dir.mkdir()
        try:
            _write_atomic(tmp_dir / WEIGHTS_NAME, blob)
            _write_atomic(tmp_dir / CFG_NAME, cfg_bytes)
            os.rename(tmp_dir, sae_dir)
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
        return sae_dir
    if not sae_dir.is_dir():
        raise MedsaeError("exists and is not a folder", sae_dir)
    _write_atomic(sae_dir / WEIGHTS_NAME, blob)
    _write_atomic(sae_dir / CFG_NAME, cfg_bytes)
    return sae_dir


# ---- reading ---------------------------------------------------------------------------------
def read_cfg(sae_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse ``cfg.json`` (no tensor loading, no migration); MedsaeError when unreadable."""
    cfg_path = Path(sae_dir) / CFG_NAME
    if not cfg_path.is_file():
        raise MedsaeError(f"SAE checkpoint has no {CFG_NAME}", sae_dir)
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MedsaeError(f"{CFG_NAME} is not valid JSON ({exc})", sae_dir) from exc
    if not isinstance(cfg, dict):
        raise MedsaeError(f"{CFG_NAME} is not a JSON object", sae_dir)
    return cfg


def load_sae(sae_dir: str | os.PathLike[str]) -> SAE:
    """Load and validate an SAE checkpoint folder (numpy only; no torch needed).

    Parameters
    ----------
    sae_dir
        Folder with ``cfg.json`` and ``sae.safetensors``.

    Returns
    -------
    SAE
        The inference object, with ``sae_id`` = sha256 of the weights file.

    Raises
    ------
    MedsaeError
        One line naming the folder and the problem: missing files, bad JSON, unknown or newer
        schema version, truncated/corrupt weights, missing tensors, shape mismatches,
        non-finite weights, or weights that do not belong to this ``cfg.json``.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load

    sae_dir = Path(sae_dir)
    if not sae_dir.is_dir():
        raise MedsaeError("SAE checkpoint folder not found", sae_dir)
    cfg = read_cfg(sae_dir)
    w_path = sae_dir / WEIGHTS_NAME
    if not w_path.is_file():
        raise MedsaeError(f"SAE checkpoint has no {WEIGHTS_NAME}", sae_dir)
    blob = w_path.read_bytes()
    try:
        raw = load(blob)
    except (SafetensorError, ValueError, OSError) as exc:
        raise MedsaeError(f"{WEIGHTS_NAME} is truncated or not a safetensors file "
                          f"({' '.join(str(exc).split())[:120]})", sae_dir) from exc
    sae_id = hashlib.sha256(blob).hexdigest()
    cfg, tensors = _migrate(cfg, dict(raw), sae_dir)
    want = cfg.get("sae_sha256")
    if want is not None and want != sae_id:
        raise MedsaeError(f"{WEIGHTS_NAME} does not match {CFG_NAME} (interrupted save or "
                          "edited file)", sae_dir)
    tensors = _validate(cfg, tensors, sae_dir)
    return SAE(
        cfg=cfg,
        W_enc_ds=tensors["W_enc"],
        b_enc_s=tensors["b_enc"],
        W_dec_sd=tensors["W_dec"],
        b_dec_d=tensors["b_dec"],
        input_mean_d=tensors["input_mean"],
        threshold_s=tensors.get("threshold"),
        sae_id=sae_id,
        path=sae_dir,
    )


def _migrate(
    cfg: dict[str, Any], tensors: dict[str, np.ndarray], where: Path
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    version = cfg.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise MedsaeError(f"{CFG_NAME} has no integer schema_version (not a medsae SAE? "
                          "use import for SAELens/dictionary_learning files)", where)
    if version > SCHEMA_VERSION:
        raise MedsaeError(f"SAE schema_version {version} is newer than this program supports "
                          f"({SCHEMA_VERSION}); upgrade medsae-desktop", where)
    while version < SCHEMA_VERSION:
        step = _MIGRATIONS.get(version)
        if step is None:
            raise MedsaeError(f"unknown SAE schema_version {version}", where)
        cfg, tensors = step(dict(cfg), dict(tensors))
        version += 1
        cfg["schema_version"] = version
    return cfg, tensors


def _validate(
    cfg: Mapping[str, Any], tensors: Mapping[str, np.ndarray], where: Path
) -> dict[str, np.ndarray]:
    """Check cfg fields and tensor names/shapes/finiteness; return float32 tensors."""
    arch = cfg.get("arch")
    if arch not in ARCHS:
        raise MedsaeError(f"unknown SAE arch {arch!r} (known: {', '.join(ARCHS)})", where)
    dims = {}
    for key in ("d_in", "d_sae"):
        val = cfg.get(key)
        if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
            raise MedsaeError(f"{CFG_NAME}: {key} must be a positive integer, got {val!r}", where)
        dims[key] = val
    d_in, d_sae = dims["d_in"], dims["d_sae"]
    scale = cfg.get("input_scale")
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not (
            math.isfinite(scale) and scale > 0):
        raise MedsaeError(f"{CFG_NAME}: input_scale must be a positive number, got {scale!r}",
                          where)
    k = cfg.get("k")
    if arch in ("topk", "batchtopk", "matryoshka"):
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= d_sae:
            raise MedsaeError(f"{CFG_NAME}: {arch} needs an integer k in 1..{d_sae}, got {k!r}",
                              where)
    shapes = {
        "W_enc": (d_in, d_sae),
        "b_enc": (d_sae,),
        "W_dec": (d_sae, d_in),
        "b_dec": (d_in,),
        "input_mean": (d_in,),
    }
    if arch in THRESHOLD_ARCHS:
        shapes["threshold"] = (d_sae,)
    out: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        if name not in tensors:
            raise MedsaeError(f"{WEIGHTS_NAME} lacks tensor {name!r} needed by arch {arch}",
                              where)
        arr = np.asarray(tensors[name])
        if tuple(arr.shape) != shape:
            raise MedsaeError(f"{WEIGHTS_NAME}: {name} has shape {tuple(arr.shape)}, expected "
                              f"{shape} for d_in={d_in}, d_sae={d_sae}", where)
        if not np.issubdtype(arr.dtype, np.floating):
            raise MedsaeError(f"{WEIGHTS_NAME}: {name} has dtype {arr.dtype}, expected float",
                              where)
        arr = np.asarray(arr, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise MedsaeError(f"{WEIGHTS_NAME}: {name} contains NaN or infinite values", where)
        out[name] = arr
    extra = sorted(set(tensors) - set(shapes) - {"threshold"})
    if extra:
        logger.warning("%s: ignoring unknown tensors %s", where, extra)
    return out
