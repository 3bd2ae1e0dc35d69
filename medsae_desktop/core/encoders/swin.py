"""MedCLIP Swin-Tiny vision tower (``MedCLIPVisionModelViT``) built without the network.

``model`` is a transformers ``SwinModel(SwinConfig())`` (the default config has the
``microsoft/swin-tiny-patch4-window7-224`` shapes) and ``projection_head`` is the bias-free
768 -> 512 linear applied to ``pooler_output``. Official ``vision_model.*`` keys load
strictly after dropping the ``relative_position_index`` buffers that transformers 4.24 saved.

Per-token embeddings (reference §3.2): ``last_hidden_state`` (B, 49, 768) is already after
the final LayerNorm and ``pooler_output`` is its token mean, so projecting each token gives
cells whose mean is the global embedding. Imports torch and transformers: backends only.
"""

from __future__ import annotations

import torch
from torch import nn


class MedCLIPSwin(nn.Module):
    """Swin-T backbone + ``projection_head``; forward gives ``(e_bd, cells_bpd)``."""

    variant = "swin-tiny"

    def __init__(self) -> None:
        super().__init__()
        from transformers import SwinConfig, SwinModel

        # Constructing from a config never touches the hub (unlike from_pretrained).
        self.model = SwinModel(SwinConfig(), add_pooling_layer=True)
        self.projection_head = nn.Linear(768, 512, bias=False)

    def forward(self, pixels_bchw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(e_bd, cells_bpd)``, both unnormalised."""
        out = self.model(pixel_values=pixels_bchw)
        e_bd = self.projection_head(out.pooler_output)
        return e_bd, self.projection_head(out.last_hidden_state)
