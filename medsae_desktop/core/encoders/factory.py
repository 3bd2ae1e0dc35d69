"""Build encoders by registry key and backend (:func:`make_encoder`).

Backends are imported on first use, so importing this module never imports torch or
onnxruntime. Keys: ``medclip-resnet``, ``medclip-swin`` (need a weights folder) and
``demo`` (seeded ResNet-50, no files).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from medsae_desktop.core.encoders.base import ENCODER_KEYS, VARIANTS, EncoderInfo, ImageEncoder
from medsae_desktop.core.errors import MedsaeError

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx")
#: ``"auto"`` picks the fastest precision that keeps cosine >= 0.999 to fp32.
PRECISIONS = ("fp32", "bf16", "auto")

_LABELS = {
    "medclip-resnet": "MedCLIP ResNet-50 (512-d projection)",
    "medclip-swin": "MedCLIP Swin-Tiny (512-d projection)",
}


def list_encoders() -> list[str]:
    """Registry keys accepted by :func:`make_encoder`."""
    return list(ENCODER_KEYS)


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def resolve_precision(precision: str, backend: str, device: str) -> str:
    """Turn ``"auto"`` into ``"fp32"``/``"bf16"`` for this backend and device.

    bf16 autocast only pays where the hardware computes in bf16: a CUDA GPU, or a CPU with
    AVX-512-BF16/AMX. Elsewhere (e.g. AVX2-only CPUs) it is emulated and slower than fp32.
    The ONNX graph is fp32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if backend == "onnx":
        return "fp32"
    import torch

    if str(device).startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return "bf16"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has native bf16 matmul (AVX-512-BF16 or AMX), per /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set(text.split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def _make_torch_vision(key: str, weights_dir: str | Path | None):  # noqa: ANN202
    """(vision module, EncoderInfo) for the torch backend."""
    if not _has("torch"):
        raise MedsaeError(f"the torch backend needs PyTorch, which is not installed; use "
                          f"backend 'onnx' with an exported model for {key}")
    if key == "demo":
        from medsae_desktop.core.encoders.demo import (
            DEMO_LABEL,
            demo_weights_sha256,
            make_demo_vision,
        )

        info = EncoderInfo(key="demo", variant="resnet50", backend="torch",
                           weights_sha256=demo_weights_sha256(), label=DEMO_LABEL)
        return make_demo_vision(), info
    if weights_dir is None:
        raise MedsaeError(f"encoder {key} needs --weights (a folder with pytorch_model.bin "
                          "or model.safetensors)")
    from medsae_desktop.core.encoders.checkpoint import load_vision_model

    vision, sha, path = load_vision_model(weights_dir, expect_variant=VARIANTS[key])
    info = EncoderInfo(key=key, variant=VARIANTS[key], backend="torch", weights_sha256=sha,
                       label=f"{_LABELS[key]}, weights {path.name} {sha[:12]}")
    return vision, info


def make_torch_encoder(key: str, weights_dir: str | Path | None = None, device: str = "cpu",
                       precision: str = "fp32") -> ImageEncoder:
    """The torch backend (see :func:`make_encoder`)."""
    vision, info = _make_torch_vision(key, weights_dir)
    from medsae_desktop.core.encoders.torch_backend import TorchEncoder

    return TorchEncoder(vision, info, device=device, precision=precision)


def default_onnx_path(key: str, weights_sha256: str) -> Path:
    """Per-user cache file of the exported graph, keyed by encoder and weights hash."""
    import platformdirs

    from medsae_desktop.core.encoders.export import EXPORT_VERSION

    cache_dir = Path(platformdirs.user_cache_dir("medsae-desktop")) / "onnx"
    return cache_dir / f"{key}-{weights_sha256[:16]}-v{EXPORT_VERSION}.onnx"


def _expected_sha(key: str, weights_dir: str | Path | None) -> str | None:
    if key == "demo":
        from medsae_desktop.core.encoders.demo import demo_weights_sha256

        return demo_weights_sha256()
    if weights_dir is None:
        return None
    from medsae_desktop.core.encoders.checkpoint import find_weights_file, sha256_file

    return sha256_file(find_weights_file(weights_dir))


def make_encoder(key: str, weights_dir: str | Path | None = None, backend: str = "torch",
                 device: str = "cpu", precision: str = "fp32",
                 onnx_path: str | Path | None = None) -> ImageEncoder:
    """Build an image encoder.

    Parameters
    ----------
    key
        ``"medclip-resnet"``, ``"medclip-swin"`` or ``"demo"``.
    weights_dir
        Folder with the official ``pytorch_model.bin`` (or ``model.safetensors``), or the
        file itself. Not needed for ``demo``, nor for ``backend="onnx"`` with ``onnx_path``.
    backend
        ``"torch"`` or ``"onnx"`` (onnxruntime; works without torch given an .onnx file).
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``. The ONNX backend maps ``cuda*``
        to the CUDA execution provider when onnxruntime has it.
    precision
        ``"fp32"`` (default; exact), ``"bf16"`` (torch autocast) or ``"auto"`` (bf16 where
        the hardware computes it natively, else fp32; see :func:`resolve_precision`).
    onnx_path
        For ``backend="onnx"``: the exported graph. Without it the graph is exported once
        (needs torch) to the per-user cache, keyed by the weights' sha256.

    Returns
    -------
    ImageEncoder

    Raises
    ------
    MedsaeError
        Bad weights folder or file, missing backend library, mismatched ONNX model.
    """
    if key not in ENCODER_KEYS:
        raise MedsaeError(f"unknown encoder {key!r}; choose one of {', '.join(ENCODER_KEYS)}")
    if backend not in BACKENDS:
        raise MedsaeError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    precision = resolve_precision(precision, backend, device)
    if backend == "torch":
        return make_torch_encoder(key, weights_dir, device=device, precision=precision)

    if precision != "fp32":
        raise MedsaeError("the ONNX backend runs the fp32 graph; use precision 'fp32'")
    if not _has("onnxruntime"):
        raise MedsaeError("the onnx backend needs onnxruntime, which is not installed")
    from medsae_desktop.core.encoders.onnx_backend import OnnxEncoder

    expected_sha = _expected_sha(key, weights_dir)
    if onnx_path is None:
        if expected_sha is None:
            raise MedsaeError(f"encoder {key} with backend onnx needs --weights or an .onnx "
                              "file")
        onnx_path = default_onnx_path(key, expected_sha)
        if not onnx_path.is_file():
            from medsae_desktop.core.encoders.export import export_onnx

            logger.info("exporting %s to %s (first use)", key, onnx_path)
            with make_torch_encoder(key, weights_dir, device="cpu") as enc:
                export_onnx(enc, onnx_path)
    enc = OnnxEncoder(onnx_path, device=device)
    if enc.info.key != key or (expected_sha is not None
                               and enc.info.weights_sha256 != expected_sha):
        got = f"{enc.info.key} (weights {enc.info.weights_sha256[:12]})"
        enc.close()
        raise MedsaeError(f"ONNX model is {got}, not {key}"
                          + (f" (weights {expected_sha[:12]})" if expected_sha else ""),
                          onnx_path)
    return enc
