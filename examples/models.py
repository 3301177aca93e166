"""Small reference networks used by the demo, the tests and the benchmarks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with BatchNorm and a (projected) residual."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNetSmall(nn.Module):
    """A CIFAR-style ResNet: stem, three stages of basic blocks, global pooling, classifier."""

    def __init__(self, in_channels: int = 3, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.layer1 = BasicBlock(width, width)
        self.layer2 = BasicBlock(width, 2 * width, stride=2)
        self.layer3 = BasicBlock(2 * width, 4 * width, stride=2)
        self.head = nn.Linear(4 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.head(h.mean(dim=(2, 3)))


class TCN(nn.Module):
    """A 1-d temporal convolutional net: dilated 'same' convs with residuals."""

    def __init__(self, channels: int = 32, layers: int = 4, kernel: int = 5, in_channels: int = 1) -> None:
        super().__init__()
        self.lift = nn.Conv1d(in_channels, channels, 1)
        self.convs = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, padding="same", dilation=2**i) for i in range(layers)
        )
        self.proj = nn.Conv1d(channels, in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lift(x)
        for conv in self.convs:
            h = h + F.gelu(conv(h))
        return self.proj(h)


class CNN3d(nn.Module):
    """A small volumetric CNN with a strided and a dilated conv."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.c1 = nn.Conv3d(1, channels, 3, padding=1)
        self.c2 = nn.Conv3d(channels, channels, (3, 3, 1), stride=(2, 2, 1), padding=(1, 1, 0))
        self.c3 = nn.Conv3d(channels, 2, 3, dilation=2, padding=2, padding_mode="replicate")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c3(F.relu(self.c2(F.relu(self.c1(x)))))


class DepthwiseSeparable(nn.Module):
    """MobileNet-style: depthwise 3x3 then pointwise 1x1, with an inverted residual."""

    def __init__(self, channels: int = 16, expand: int = 4) -> None:
        super().__init__()
        hidden = channels * expand
        self.stem = nn.Conv2d(3, channels, 3, stride=2, padding=1)
        self.expand = nn.Conv2d(channels, hidden, 1)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.bn = nn.BatchNorm2d(hidden)
        self.project = nn.Conv2d(hidden, channels, 1)
        self.dw_multiplier = nn.Conv2d(channels, 2 * channels, 5, padding=2, groups=channels, padding_mode="circular")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self.stem(x))
        h = h + self.project(F.relu6(self.bn(self.depthwise(F.relu6(self.expand(h))))))
        return self.dw_multiplier(h)
