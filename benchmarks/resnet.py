"""A standard ResNet-18 (He et al. 2016) in plain torch, for benchmarks at ImageNet scale.

torchvision is optional (the ``vision`` extra), and its compiled operators need a matching
torch, so the benchmarks define the network themselves: BasicBlock, [2, 2, 2, 2] blocks of
64-128-256-512 channels, 11.7M parameters, with torchvision's module names (``conv1``,
``layer1`` .. ``layer4``, ``fc``) and initialisation, so that its state dicts load.
Letters: N images, C channels, H, W spatial.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (a 1x1 projection when the shape
    changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """(N, 3, 224, 224) -> (N, num_classes) logits; ``layer3`` gives (N, 256, 14, 14) and
    ``layer4`` (N, 512, 7, 7) after their final ReLU."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        widths = (64, 128, 256, 512)
        c_in = 64
        for i, width in enumerate(widths, start=1):
            stride = 1 if i == 1 else 2
            layer = nn.Sequential(BasicBlock(c_in, width, stride), BasicBlock(width, width))
            self.add_module(f"layer{i}", layer)
            c_in = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # N, 64, 56, 56
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # N, 512, 7, 7
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(*, seed: int = 0, num_classes: int = 1000) -> ResNet18:
    """A randomly initialised ResNet-18 (seeded), in eval mode."""
    torch.manual_seed(seed)
    return ResNet18(num_classes).eval()


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Set every BatchNorm's running statistics to those of the images x (N, 3, H, W): a
    random network then has activations of a trained one's scale (not growing with depth)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the calibration batch
    model.train()
    model(x)
    return model.eval()
