"""PyTorch backend of the encoder interface (MedCLIP ResNet-50 / Swin-T, demo encoder).

Speed choices (measured in ``benchmarks/bench_embed.py``): ResNet runs in channels-last
memory format (oneDNN's fast layout on CPU, tensor cores' on GPU); ``precision="bf16"``
wraps the forward pass in autocast (bf16 on CPU and on GPUs that support it, fp16 on older
GPUs). Outputs are always float32 numpy, normalised in float32.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from medsae_desktop.core.encoders.base import EncodeResult, EncoderInfo, ImageEncoder
from medsae_desktop.core.encoders.heads import NormalisedEncoder

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")


def resolve_device(device: str | None) -> torch.device:
    """``"auto"``/None -> cuda if available else cpu; otherwise ``torch.device(device)``."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from medsae_desktop.core.errors import MedsaeError

        raise MedsaeError(f"device {device!r} requested but CUDA is not available")
    return dev


def autocast_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the hardware has it, else fp16 (pre-Ampere GPUs)."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


class TorchEncoder(ImageEncoder):
    """Run a vision tower with torch and return numpy.

    Parameters
    ----------
    vision
        A :class:`~medsae_desktop.core.encoders.resnet.MedCLIPResNet` or
        :class:`~medsae_desktop.core.encoders.swin.MedCLIPSwin` with weights loaded.
    info
        Its :class:`EncoderInfo` (``backend`` and ``precision`` are set here).
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... or ``"auto"``.
    precision
        ``"fp32"`` (exact to float rounding) or ``"bf16"`` (autocast: faster only where
        the hardware has bf16 units -- GPUs, AVX-512-BF16/AMX CPUs -- cosine >= 0.999).
    fuse_bn
        Fold ResNet BatchNorms into the convolutions (inference-only; equal to float
        rounding). The vision module passed in is modified.
    """

    def __init__(self, vision: nn.Module, info: EncoderInfo, device: str = "cpu",
                 precision: str = "fp32", fuse_bn: bool = True) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.device = resolve_device(device)
        self.precision = precision
        self.info = info.replace(backend="torch", precision=precision)
        # channels_last only pays for convolutions; Swin's tokens are not NCHW.
        self._channels_last = getattr(vision, "variant", "") == "resnet50"
        vision = vision.eval()
        if fuse_bn and self._channels_last:
            from medsae_desktop.core.encoders.resnet import fuse_batchnorm

            vision = fuse_batchnorm(vision)
        model = NormalisedEncoder(vision).eval().requires_grad_(False).to(self.device)
        if self._channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model: nn.Module | None = model

    @property
    def module(self) -> nn.Module:
        """The :class:`NormalisedEncoder` (what the ONNX exporter traces)."""
        if self.model is None:
            raise RuntimeError("encoder is closed")
        return self.model

    def _encode(self, pixels_bchw: np.ndarray, patches: bool) -> EncodeResult:
        model = self.module
        with torch.inference_mode():
            x = torch.from_numpy(pixels_bchw).to(self.device, non_blocking=True)
            if self._channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=autocast_dtype(self.device),
                                enabled=self.precision == "bf16"):
                emb_bd, patches_bpd = model(x)
            emb = emb_bd.float().cpu().numpy()
            pat = patches_bpd.float().cpu().numpy() if patches else None
        return EncodeResult(emb, pat)

    def close(self) -> None:
        self.model = None
