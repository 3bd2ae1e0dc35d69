"""Torch modules that sit on top of a vision tower: L2 normalisation and an SAE encoder.

:class:`NormalisedEncoder` is the exact graph both the torch backend runs and the ONNX
exporter traces, so torch/ONNX parity is parity of one module. Imports torch: backends only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

#: SAE architectures whose inference activation is ``pre * (pre > threshold)``; kept equal
#: to ``core/sae/runtime.py``'s set (a test checks it).
THRESHOLD_ARCHS = frozenset({"batchtopk", "jumprelu", "matryoshka"})


class NormalisedEncoder(nn.Module):
    """pixels -> (L2-normalised embedding, per-location embeddings scaled by the same norm).

    Parameters
    ----------
    vision
        :class:`~medsae_desktop.core.encoders.resnet.MedCLIPResNet` or
        :class:`~medsae_desktop.core.encoders.swin.MedCLIPSwin`.
    """

    def __init__(self, vision: nn.Module) -> None:
        super().__init__()
        self.vision = vision

    def forward(self, pixels_bchw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e_bd, cells_bpd = self.vision(pixels_bchw)
        # Official MedCLIPModel.encode_image divides by the norm; the clamp only guards an
        # all-zero output against NaN and never changes a real embedding.
        norm_b1 = e_bd.float().norm(dim=-1, keepdim=True).clamp_min(1e-12)
        # One scale for the image and all its cells keeps mean(cells) == embedding, so an
        # affine SAE pre-activation map averages to the global pre-activation.
        return e_bd.float() / norm_b1, cells_bpd.float() / norm_b1[:, None, :]


class SAEHead(nn.Module):
    """SAE inference encoder as torch ops, built from a loaded SAE's numpy weights.

    ``pre = ((x - mean) * scale - b_dec) @ W_enc + b_enc`` (DESIGN.md §5.2), then the
    architecture's activation for the global code, as ``core/sae/runtime.py`` applies it:
    relu; topk (the k largest ``pre``, then relu); threshold archs
    (batchtopk/jumprelu/matryoshka) ``pre * (pre > max(threshold, 0))``. The
    per-location map is the affine ``pre`` of each cell (a contribution map, reference §3.1).

    Parameters
    ----------
    sae
        Any object with ``W_enc_ds, b_enc_s, b_dec_d, input_mean_d, input_scale,
        threshold_s`` (or None) and ``cfg["arch"]``, ``cfg.get("k")`` -- e.g.
        :func:`medsae_desktop.core.sae.load_sae`'s result.
    """

    def __init__(self, sae: Any) -> None:
        super().__init__()
        cfg = sae.cfg
        self.arch = str(cfg["arch"])
        k = cfg.get("k")
        self.k = None if k is None else int(k)
        f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
        self.register_buffer("W_enc_ds", f32(sae.W_enc_ds))
        self.register_buffer("b_enc_s", f32(sae.b_enc_s))
        self.register_buffer("b_dec_d", f32(sae.b_dec_d))
        self.register_buffer("input_mean_d", f32(sae.input_mean_d))
        self.input_scale = float(sae.input_scale)
        threshold = getattr(sae, "threshold_s", None)
        self.uses_threshold = self.arch in THRESHOLD_ARCHS
        if self.uses_threshold:
            if threshold is None:
                raise ValueError(f"SAE arch {self.arch!r} needs a threshold for inference")
            # Same rule as core/sae/runtime.py: the clamp keeps codes non-negative even for
            # a negative learnt threshold.
            self.register_buffer("threshold_s", f32(np.maximum(threshold, 0.0)))
        elif self.arch not in ("relu", "topk"):
            raise ValueError(f"unknown SAE arch {self.arch!r}")
        if self.arch == "topk" and self.k is None:
            raise ValueError("topk SAE without k in its cfg")

    def preacts(self, x_nd: torch.Tensor) -> torch.Tensor:
        """Affine pre-activation ``(..., d_sae)``."""
        x_nd = (x_nd - self.input_mean_d) * self.input_scale - self.b_dec_d
        return x_nd @ self.W_enc_ds + self.b_enc_s

    def forward(self, emb_bd: torch.Tensor,
                patches_bpd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(codes_bs, patch_preacts_bps)``."""
        pre_bs = self.preacts(emb_bd)
        if self.uses_threshold:
            codes_bs = pre_bs * (pre_bs > self.threshold_s).to(pre_bs.dtype)
        else:
            if self.arch == "topk":
                vals_bk, idx_bk = torch.topk(pre_bs, min(self.k, pre_bs.shape[-1]), dim=-1)
                codes_bs = torch.zeros_like(pre_bs).scatter(-1, idx_bk, torch.relu(vals_bk))
            else:
                codes_bs = torch.relu(pre_bs)
        return codes_bs, self.preacts(patches_bpd)


class EncoderWithSAE(nn.Module):
    """:class:`NormalisedEncoder` followed by :class:`SAEHead` (the 4-output ONNX graph)."""

    def __init__(self, encoder: NormalisedEncoder, sae_head: SAEHead) -> None:
        super().__init__()
        self.encoder = encoder
        self.sae_head = sae_head

    def forward(self, pixels_bchw: torch.Tensor):  # noqa: ANN201
        emb_bd, patches_bpd = self.encoder(pixels_bchw)
        codes_bs, pre_bps = self.sae_head(emb_bd, patches_bpd)
        return emb_bd, patches_bpd, codes_bs, pre_bps
