"""Load an official MedCLIP checkpoint folder into our vision towers, safely and strictly.

The official ``pytorch_model.bin`` is the full ``MedCLIPModel.state_dict()`` (vision, text,
``logit_scale``; reference models_and_dicom.md §1.4). Recipe:

1. find ``pytorch_model.bin`` or ``model.safetensors`` in the folder (or take a file path);
2. read it without executing pickled code (``torch.load(weights_only=True,
   map_location="cpu")``; safetensors needs no pickle at all);
3. strip a ``module.`` prefix (DataParallel), keep ``vision_model.*`` and strip that prefix
   (a file of bare ``model.*``/``projection_head.*`` keys -- our own re-save -- is accepted);
4. drop ``relative_position_index`` / ``position_ids`` buffers that transformers 4.24 saved
   but 5.x recreates;
5. detect the variant from the keys and load strictly, reporting missing and unexpected keys.

torch is imported inside the functions that need it, so :func:`find_weights_file` and
:func:`sha256_file` work in a torch-free (onnxruntime-only) install.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path

from typing import TYPE_CHECKING

from medsae_desktop.core.errors import MedsaeError

if TYPE_CHECKING:
    import torch
    from torch import nn

logger = logging.getLogger(__name__)

#: File names looked for in a weights folder, in order of preference.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: A key that identifies each variant (after stripping ``vision_model.``).
VARIANT_KEYS = {
    "resnet50": "model.conv1.weight",
    "swin-tiny": "model.embeddings.patch_embeddings.projection.weight",
}
_DROPPED_SUFFIXES = ("relative_position_index", "position_ids")


def find_weights_file(weights: str | Path) -> Path:
    """The checkpoint file in a weights folder (or ``weights`` itself if it is a file)."""
    path = Path(weights)
    if path.is_file():
        return path
    if not path.is_dir():
        raise MedsaeError("weights folder not found", path)
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    raise MedsaeError(f"no {' or '.join(WEIGHT_FILES)} in the weights folder", path)


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """sha256 hex of a file, read in chunks (checkpoints are hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{name: tensor}`` dict (no code execution)."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path), device="cpu"))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except MedsaeError:
        raise
    except Exception as e:  # noqa: BLE001 -- any reader failure means "not a checkpoint"
        raise MedsaeError(f"cannot read checkpoint ({type(e).__name__}: {e})", path) from e
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"],
                                                                         Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise MedsaeError("checkpoint is not a state dict of tensors", path)
    return dict(obj)


def vision_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the vision tower's tensors, named as in our modules (steps 3-4 above)."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if any(k.startswith("vision_model.") for k in sd):
        sd = {k.removeprefix("vision_model."): v for k, v in sd.items()
              if k.startswith("vision_model.")}
    return {k: v for k, v in sd.items() if not k.endswith(_DROPPED_SUFFIXES)}


def detect_variant(sd: Mapping[str, torch.Tensor]) -> str | None:
    """``"resnet50"``, ``"swin-tiny"`` or None, from the identifying key."""
    for variant, key in VARIANT_KEYS.items():
        if key in sd:
            return variant
    return None


def make_vision_model(variant: str) -> nn.Module:
    """An uninitialised-weights vision tower of the given variant (no network)."""
    if variant == "resnet50":
        from medsae_desktop.core.encoders.resnet import MedCLIPResNet

        return MedCLIPResNet()
    if variant == "swin-tiny":
        from medsae_desktop.core.encoders.swin import MedCLIPSwin

        return MedCLIPSwin()
    raise ValueError(f"unknown variant {variant!r}")


def _few(keys: list[str], n: int = 3) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > n else f" ({len(keys)})"
    return ", ".join(keys[:n]) + more


def load_strict(model: nn.Module, sd: Mapping[str, torch.Tensor], path: object = None) -> None:
    """``load_state_dict(strict=True)`` with a one-line :class:`MedsaeError` on mismatch."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys: {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_few(unexpected)}")
    if wrong:
        problems.append(f"shape mismatches: {_few(wrong)}")
    if problems:
        raise MedsaeError(f"checkpoint does not fit the {getattr(model, 'variant', '?')} "
                          f"vision tower; " + "; ".join(problems), path)
    model.load_state_dict({k: v.to(own[k].dtype) if v.is_floating_point() else v
                           for k, v in sd.items()}, strict=True)


def load_vision_model(weights: str | Path,
                      expect_variant: str | None = None) -> tuple[nn.Module, str, Path]:
    """Build the vision tower from an official (or re-saved) MedCLIP checkpoint.

    Parameters
    ----------
    weights
        Folder holding ``pytorch_model.bin`` or ``model.safetensors``, or the file itself.
    expect_variant
        ``"resnet50"`` or ``"swin-tiny"`` if the caller asked for one; a checkpoint of the
        other variant is then an error.

    Returns
    -------
    model, weights_sha256, path
        The tower in eval mode, the file's sha256 and the file read.

    Raises
    ------
    MedsaeError
        Missing/unreadable file, no vision tower inside, wrong variant, or any
        missing/unexpected/misshapen key.
    """
    path = find_weights_file(weights)
    sd = vision_state_dict(read_state_dict(path))
    variant = detect_variant(sd)
    if variant is None:
        raise MedsaeError(
            "not a MedCLIP vision checkpoint: no vision_model.model.conv1.weight (ResNet-50) "
            "or vision_model.model.embeddings.patch_embeddings.projection.weight (Swin-T); "
            f"keys found: {_few(sorted(sd))}", path)
    if expect_variant is not None and variant != expect_variant:
        raise MedsaeError(f"checkpoint holds a {variant} vision tower, not {expect_variant}",
                          path)
    model = make_vision_model(variant)
    load_strict(model, sd, path)
    logger.info("loaded %s vision tower from %s (%d tensors)", variant, path, len(sd))
    return model.eval(), sha256_file(path), path
