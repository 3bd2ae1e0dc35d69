"""The demo encoder: MedCLIP's ResNet-50 architecture with deterministic seeded weights.

It lets every test, the demo bundle and a first run work without MedCLIP weights. All random
numbers come from one seeded CPU ``torch.Generator`` in a fixed order, so every machine builds
the same model (to float rounding: the calibration step below runs the network). Its
``weights_sha256`` is a hash of the seed and this recipe, not of a file.

The embeddings must carry image structure (the demo SAE is trained on them), so the init is
chosen to keep a random ResNet informative rather than to mimic training:

1. He-normal convs; every block's last BN scale (``bn3.weight``) is ``RESIDUAL_GAIN`` so
   16 residual additions do not let the shared skip path swamp the branches.
2. BatchNorm running statistics are *calibrated* on ``N_CALIB`` seeded smooth random fields
   (one train-mode forward pass with momentum 1), so every layer sees normalised inputs
   instead of letting magnitudes drift with depth.
3. Pooled post-ReLU features of any image share a large positive common mode, which a random
   projection maps to nearly one direction for every image (mean pairwise cosine 0.998
   without this step). The projection rows are made orthogonal to the calibration images'
   mean feature direction, removing the common mode and keeping the image-dependent part
   (mean pairwise cosine about 0.7 on distinct test images).

Calibrating at ``CALIB_SIZE`` px instead of 224 keeps construction fast (one forward pass of
a few small images); the convolutions do not care about input size. The result is cached
per process. torch is imported inside functions only, so :func:`demo_weights_sha256` works
without torch (the ONNX backend checks it).
"""

from __future__ import annotations

import functools
import hashlib
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from medsae_desktop.core.encoders.resnet import MedCLIPResNet

#: Seed of the shipped demo weights.
DEMO_SEED = 0
#: Scale of the last BN in every bottleneck branch.
RESIDUAL_GAIN = 0.2
#: Calibration images and their side in pixels.
N_CALIB = 8
CALIB_SIZE = 112
#: Bump when the init recipe changes (changes the weights id).
RECIPE_VERSION = 3
#: What the UI shows for this encoder.
DEMO_LABEL = "MedCLIP ResNet-50 architecture, untrained demo weights (seeded, not MedCLIP)"


def demo_weights_sha256(seed: int = DEMO_SEED) -> str:
    """Identifier of the demo weights: sha256 of seed + architecture + recipe version."""
    text = (f"medsae-demo-encoder/resnet50-fc512/recipe{RECIPE_VERSION}/gain{RESIDUAL_GAIN}"
            f"/calib{N_CALIB}x{CALIB_SIZE}/seed{seed}")
    return hashlib.sha256(text.encode()).hexdigest()


def _calibration_pixels(gen: torch.Generator, n: int, size: int) -> torch.Tensor:
    """Seeded smooth random fields in (0, 1), normalised like MedCLIP input, (n, 3, s, s)."""
    import torch
    import torch.nn.functional as F

    from medsae_desktop.core.encoders.preprocessing import IMG_MEAN, IMG_STD

    x = torch.zeros(n, 1, size, size)
    for cells in (4, 8, 16, 32, 64):  # 1/f-like mixture of scales, like anatomy + texture
        z = torch.randn(n, 1, cells, cells, generator=gen)
        x += F.interpolate(z, size=(size, size), mode="bilinear",
                           align_corners=False) / math.sqrt(cells / 4)
    return ((torch.sigmoid(x) - IMG_MEAN) / IMG_STD).repeat(1, 3, 1, 1)


@functools.lru_cache(maxsize=2)
def _demo_state_dict(seed: int) -> dict[str, torch.Tensor]:
    import torch
    from torch import nn

    from medsae_desktop.core.encoders.resnet import MedCLIPResNet

    model = MedCLIPResNet()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, nn.Conv2d):
                fan_in = mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1]
                w = torch.randn(mod.weight.shape, generator=gen)
                mod.weight.copy_(w * math.sqrt(2.0 / fan_in))
            elif isinstance(mod, nn.BatchNorm2d):
                mod.weight.fill_(RESIDUAL_GAIN if name.endswith("bn3") else 1.0)
                mod.bias.zero_()
            elif isinstance(mod, nn.Linear):
                w = torch.randn(mod.weight.shape, generator=gen)
                mod.weight.copy_(w / math.sqrt(mod.in_features))
        x = _calibration_pixels(gen, N_CALIB, CALIB_SIZE)
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        for bn in bns:  # running stats := this batch's stats
            bn.reset_running_stats()
            bn.momentum = 1.0
        model.train()
        # The train-mode pass normalises with the batch stats it stores, so its output
        # serves for step 3 too (one forward pass instead of two).
        mean_c = model.model.features(x).mean(dim=(0, 2, 3))
        model.eval()
        for bn in bns:
            bn.momentum = 0.1
            bn.num_batches_tracked.zero_()
        u_c = mean_c / mean_c.norm()
        w_dc = model.model.fc.weight
        w_dc -= (w_dc @ u_c)[:, None] * u_c[None, :]
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def make_demo_vision(seed: int = DEMO_SEED) -> MedCLIPResNet:
    """The seeded demo ResNet-50 tower (eval mode)."""
    from medsae_desktop.core.encoders.resnet import MedCLIPResNet

    model = MedCLIPResNet()
    model.load_state_dict({k: v.clone() for k, v in _demo_state_dict(seed).items()},
                          strict=True)
    return model.eval()
