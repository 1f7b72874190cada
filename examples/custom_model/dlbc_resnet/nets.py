"""``resnet_small``: a stem conv, residual blocks of two convs each, global average pooling, a linear head.

Works on 1-D signals (C, L), e.g. mnist1d, and 2-D images (C, H, W), e.g. digits. The stem
reads the raw input, so the Secure Mapping Layer folds into it; the first block's first conv
hosts the watermark. Both names are fixed whatever the parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from dlbc_ray.models.nets import net_factory


class Block(nn.Module):
    """x + conv(relu(conv(x))), then ReLU."""

    def __init__(self, width: int, conv: type[nn.Module]) -> None:
        super().__init__()
        self.conv1 = conv(width, width, kernel_size=3, padding=1)
        self.conv2 = conv(width, width, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))


class ResNetSmall(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], n_classes: int, *, width: int, blocks: int) -> None:
        super().__init__()
        conv = nn.Conv1d if len(input_shape) == 2 else nn.Conv2d
        self.stem = conv(input_shape[0], width, kernel_size=3, padding=1)
        self.blocks = nn.ModuleList(Block(width, conv) for _ in range(blocks))
        self.head = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        for block in self.blocks:
            h = block(h)
        return self.head(h.flatten(2).mean(dim=2))


@net_factory(description="small residual CNN for (C, L) signals or (C, H, W) images",
             defaults={"width": 16, "blocks": 2}, first_layer="stem.weight", watermark_layer="blocks.0.conv1.weight")
def resnet_small(params: Mapping[str, Any], input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    if len(input_shape) not in (2, 3):
        raise ValueError(f"resnet_small takes (C, L) or (C, H, W) inputs, not {tuple(input_shape)}")
    return ResNetSmall(input_shape, n_classes, width=params["width"], blocks=params["blocks"])
