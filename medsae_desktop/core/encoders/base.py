"""The encoder interface every backend implements: plain numpy in, plain numpy out.

An encoder turns preprocessed pixels ``(B, 3, 224, 224)`` into L2-normalised 512-d MedCLIP
image embeddings and, on request, per-location embeddings ``(B, 49, 512)`` for heat maps. No
torch or onnxruntime type ever crosses this boundary, so the UI and the clinician install (no
torch) can use any backend. No torch, no Qt, no printing here.

Shape letters: ``b`` batch, ``c`` channels, ``h``/``w`` pixels, ``d`` embedding width (512),
``p`` grid cells (49 = 7 x 7, row-major).
"""

from __future__ import annotations

import abc
import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medsae_desktop.core.encoders.preprocessing import PREPROCESSING, preprocess_renders

#: Registry keys of the encoders :func:`make_encoder` builds.
ENCODER_KEYS = ("medclip-resnet", "medclip-swin", "demo")
#: Architecture variant of each key.
VARIANTS = {"medclip-resnet": "resnet50", "medclip-swin": "swin-tiny", "demo": "resnet50"}


@dataclasses.dataclass(frozen=True)
class EncoderInfo:
    """What produced an embedding: stored in caches, SAE configs and ONNX metadata.

    Attributes
    ----------
    key
        Registry key: ``"medclip-resnet"``, ``"medclip-swin"`` or ``"demo"``.
    variant
        Architecture: ``"resnet50"`` or ``"swin-tiny"``.
    backend
        ``"torch"`` or ``"onnx"`` (does not change the embedding beyond float rounding).
    weights_sha256
        sha256 hex of the weights file loaded; for the demo encoder a hash of its seed and
        architecture (its weights are generated, not read).
    label
        Human-readable description for the UI and reports.
    d_out
        Embedding width (512: the MedCLIP projection output, not the 2048/768 backbone).
    grid
        Rows and columns of the per-location grid (7, 7); ``P = grid[0] * grid[1]``.
    precision
        Compute precision of the forward pass: ``"fp32"`` or ``"bf16"`` (autocast).
    preprocessing
        The input transform (see :data:`PREPROCESSING`); part of what makes embeddings
        comparable.
    """

    key: str
    variant: str
    backend: str
    weights_sha256: str
    label: str
    d_out: int = 512
    grid: tuple[int, int] = (7, 7)
    precision: str = "fp32"
    preprocessing: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: dict(PREPROCESSING))

    @property
    def n_patches(self) -> int:
        """Number of per-location embeddings P (49)."""
        return self.grid[0] * self.grid[1]

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON dict (the cache's ``encoder`` attribute, ONNX metadata, SAE cfg)."""
        d = dataclasses.asdict(self)
        d["grid"] = list(self.grid)
        d["preprocessing"] = dict(self.preprocessing)
        d["embedding"] = "medclip-projection-512-l2"  # not the pooled backbone output
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> EncoderInfo:
        """Inverse of :meth:`to_json` (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if "grid" in kw:
            kw["grid"] = tuple(int(g) for g in kw["grid"])
        return cls(**kw)

    def __hash__(self) -> int:  # the dict field is unhashable; hash the canonical JSON
        return hash(self.to_json_str())

    def to_json_str(self) -> str:
        """:meth:`to_json` serialised with sorted keys."""
        return json.dumps(self.to_json(), sort_keys=True)

    def replace(self, **changes: Any) -> EncoderInfo:
        """A copy with some fields changed (e.g. ``backend="onnx"``)."""
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class EncodeResult:
    """Output of :meth:`ImageEncoder.encode`.

    Attributes
    ----------
    embeddings_bd
        float32 ``(B, 512)``, each row of unit L2 norm (MedCLIP ``encode_image``).
    patches_bpd
        float32 ``(B, 49, 512)`` per-location embeddings, or None when not requested. Each
        cell is the projection of one 32-px grid cell, divided by the *same* ``||e||`` as
        the global embedding, so ``patches_bpd.mean(axis=1) == embeddings_bd`` (to float
        rounding) and any affine SAE pre-activation map averages to the global one.
    """

    embeddings_bd: np.ndarray
    patches_bpd: np.ndarray | None = None


class ImageEncoder(abc.ABC):
    """Base class of every backend (torch, onnxruntime).

    Subclasses set :attr:`info` and implement :meth:`_encode`. Use as a context manager or
    call :meth:`close` to release the model.
    """

    info: EncoderInfo

    @abc.abstractmethod
    def _encode(self, pixels_bchw: np.ndarray, patches: bool) -> EncodeResult:
        """Backend forward pass on a validated float32 ``(B, 3, 224, 224)`` array."""

    def encode(self, pixels_bchw: np.ndarray, patches: bool = False) -> EncodeResult:
        """Embed preprocessed pixels.

        Parameters
        ----------
        pixels_bchw
            float32 ``(B, 3, 224, 224)`` from :func:`preprocess_render` (a single-channel
            ``(B, 1, 224, 224)`` array is repeated to 3 channels, as MedCLIP does).
        patches
            Also return the per-location embeddings.

        Returns
        -------
        EncodeResult
        """
        pixels_bchw = np.asarray(pixels_bchw, dtype=np.float32)
        size = int(self.info.preprocessing["size"])
        if pixels_bchw.ndim != 4 or pixels_bchw.shape[1] not in (1, 3) \
                or pixels_bchw.shape[2:] != (size, size):
            raise ValueError(
                f"pixels_bchw must be (B, 3, {size}, {size}), got {pixels_bchw.shape}")
        if pixels_bchw.shape[1] == 1:
            pixels_bchw = np.repeat(pixels_bchw, 3, axis=1)
        if pixels_bchw.shape[0] == 0:
            d = self.info.d_out
            return EncodeResult(np.zeros((0, d), np.float32),
                                np.zeros((0, self.info.n_patches, d), np.float32)
                                if patches else None)
        return self._encode(np.ascontiguousarray(pixels_bchw), patches)

    def encode_renders(self, renders_hw: Sequence[np.ndarray],
                       patches: bool = False) -> EncodeResult:
        """Preprocess 8-bit grayscale renders (any sizes) and embed them.

        Parameters
        ----------
        renders_hw
            uint8 ``(H, W)`` images in MONOCHROME2 orientation (the display render).
        patches
            Also return the per-location embeddings.
        """
        return self.encode(preprocess_renders(renders_hw), patches=patches)

    def close(self) -> None:
        """Release the model (idempotent)."""

    def __enter__(self) -> ImageEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        i = self.info
        return f"<{type(self).__name__} {i.key} {i.variant} {i.backend} {i.precision}>"
