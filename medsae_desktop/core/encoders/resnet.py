"""MedCLIP ResNet-50 vision tower, written out so that no torchvision is needed.

Parameter and buffer names equal torchvision's ``resnet50`` exactly (``conv1``, ``bn1``,
``layer1..4.{i}.{conv1,bn1,conv2,bn2,conv3,bn3,downsample.0,downsample.1}``, ``fc``), with
MedCLIP's change: ``fc`` is the bias-free 2048 -> 512 projection. An official checkpoint's
``vision_model.model.*`` keys therefore load strictly into :class:`MedCLIPResNet`'s
``model.*``. Torchvision v1.5 layout: the stride of a bottleneck sits on its 3 x 3 conv.

Imports torch: load only from backends.
"""

from __future__ import annotations

import torch
from torch import nn

#: Bottleneck blocks per stage of ResNet-50.
LAYERS = (3, 4, 6, 3)


class Bottleneck(nn.Module):
    """torchvision ``Bottleneck`` (expansion 4, stride on conv2)."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    """torchvision-layout ResNet-50 with ``fc = Linear(2048, d_out, bias=False)``."""

    def __init__(self, d_out: int = 512) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = 64
        for i, (n_blocks, width) in enumerate(zip(LAYERS, (64, 128, 256, 512)), start=1):
            stride = 1 if i == 1 else 2
            out_ch = width * Bottleneck.expansion
            down = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                 nn.BatchNorm2d(out_ch))
            blocks = [Bottleneck(in_ch, width, stride, down)]
            blocks += [Bottleneck(out_ch, width) for _ in range(n_blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            in_ch = out_ch
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, d_out, bias=False)

    def features(self, x_bchw: torch.Tensor) -> torch.Tensor:
        """``layer4`` output ``(B, 2048, 7, 7)`` for a 224 input (stride 32)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x_bchw))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x_bchw: torch.Tensor) -> torch.Tensor:
        """torchvision forward: unnormalised ``(B, d_out)`` (MedCLIP's ``vision_model``)."""
        return self.fc(torch.flatten(self.avgpool(self.features(x_bchw)), 1))


class MedCLIPResNet(nn.Module):
    """MedCLIP ``MedCLIPVisionModel``: ``model`` is the ResNet-50 whose ``fc`` projects.

    :meth:`forward` returns the unnormalised global embedding and the per-cell embeddings
    (reference §3.1): ``e = fc(mean_cells F)`` as the official code computes it, and
    ``e_cell = fc(F_cell)``; by linearity ``mean_cells e_cell == e``.
    """

    variant = "resnet50"

    def __init__(self) -> None:
        super().__init__()
        self.model = ResNet50()

    def forward(self, pixels_bchw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(e_bd, cells_bpd)``, both unnormalised."""
        f_bchw = self.model.features(pixels_bchw)
        e_bd = self.model.fc(f_bchw.mean(dim=(2, 3)))
        # (B, C, 7, 7) -> (B, 49, C) row-major cells, then the same bias-free projection.
        cells_bpc = f_bchw.flatten(2).transpose(1, 2)
        return e_bd, self.model.fc(cells_bpc)


def fuse_batchnorm(model: MedCLIPResNet) -> MedCLIPResNet:
    """Fold every eval-mode BatchNorm into the convolution before it, in place.

    Inference-only speed-up: one op and one memory pass fewer per conv. The outputs equal
    the unfused model's to float rounding (relative ~1e-7 in fp32). The fused model no
    longer has the checkpoint's state-dict layout, so fuse only a model you will not save.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    assert not model.training, "fuse_batchnorm needs a model in eval mode"
    net = model.model
    net.conv1 = fuse_conv_bn_eval(net.conv1, net.bn1)
    net.bn1 = nn.Identity()
    for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
        for block in stage:
            for i in (1, 2, 3):
                conv, bn = getattr(block, f"conv{i}"), getattr(block, f"bn{i}")
                setattr(block, f"conv{i}", fuse_conv_bn_eval(conv, bn))
                setattr(block, f"bn{i}", nn.Identity())
            if block.downsample is not None:
                block.downsample = nn.Sequential(
                    fuse_conv_bn_eval(block.downsample[0], block.downsample[1]))
    return model
