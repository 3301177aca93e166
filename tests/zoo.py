"""A zoo of small PyTorch architectures used by the tests.

Every entry is defined here in plain torch (no torchvision) and is cheap: a
forward pass on its example inputs takes a few milliseconds on CPU and every
model has well under 300k parameters.  Each entry records how many conv /
average-pool / max-pool *call sites are executed* by one forward pass on the
example inputs (a module called twice counts twice), how many fixed-graph
propagations ``adj @ h`` it performs, and whether plain
``torch.fx.symbolic_trace(model)`` succeeds.

Usage::

    from tests.zoo import ZOO
    entry = ZOO["resnet_basic"]
    torch.manual_seed(0)
    model = entry.make().eval()
    out = model(*entry.example_inputs())
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ZooEntry", "ZOO"]


@dataclass(frozen=True)
class ZooEntry:
    name: str
    make: Callable[[], nn.Module]  # fresh model, deterministic given torch.manual_seed
    example_inputs: Callable[[], tuple]  # fresh example input tuple (tensors only)
    convs: int  # conv CALLS in forward (module or functional, conv1d/2d/3d)
    avg_pools: int  # AvgPool*d / AdaptiveAvgPool*d / F.avg_pool*d / F.adaptive_avg_pool*d calls
    max_pools: int  # max-pool calls
    graph_convs: int  # fixed-graph propagations adj @ h
    traceable: bool  # whether torch.fx.symbolic_trace(make()) succeeds


# ---------------------------------------------------------------------------
# 1. ResNet, basic blocks
# ---------------------------------------------------------------------------


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                nn.BatchNorm2d(cout),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetBasic(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.layer1 = BasicBlock(16, 16, stride=1)  # identity shortcut
        self.layer2 = BasicBlock(16, 32, stride=2)  # projection shortcut
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.pool(x), 1))


# ---------------------------------------------------------------------------
# 2. ResNet, bottleneck blocks
# ---------------------------------------------------------------------------


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, mid: int, stride: int = 1):
        super().__init__()
        cout = mid * self.expansion
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                nn.BatchNorm2d(cout),
            )
        else:
            self.downsample = None

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out = out + identity
        return self.relu(out)


class ResNetBottleneck(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = Bottleneck(16, 8, stride=1)  # 16 -> 32, projection (channels)
        self.layer2 = Bottleneck(32, 8, stride=1)  # 32 -> 32, identity
        self.layer3 = Bottleneck(32, 16, stride=2)  # 32 -> 64, projection, stride 2
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---------------------------------------------------------------------------
# 3. VGG
# ---------------------------------------------------------------------------


class VGG(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.avgpool = nn.AvgPool2d(2)  # 8x8 -> 4x4
        self.classifier = nn.Sequential(
            nn.Linear(32 * 4 * 4, 64), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(64, num_classes),
        )

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


# ---------------------------------------------------------------------------
# 4. DenseNet
# ---------------------------------------------------------------------------


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x):
        return self.conv(F.relu(self.bn(x)))


class DenseBlock(nn.Module):
    def __init__(self, cin: int, growth: int, n_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth) for i in range(n_layers))

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class Transition(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x):
        return self.pool(self.conv(F.relu(self.bn(x))))


class DenseNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.block1 = DenseBlock(16, 8, 3)  # 16 -> 40 channels
        self.trans1 = Transition(40, 20)
        self.block2 = DenseBlock(20, 8, 2)  # 20 -> 36 channels
        self.bn = nn.BatchNorm2d(36)
        self.fc = nn.Linear(36, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = self.block2(self.trans1(self.block1(x)))
        x = F.relu(self.bn(x))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


# ---------------------------------------------------------------------------
# 5. MobileNetV2
# ---------------------------------------------------------------------------


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.block = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )

    def forward(self, x):
        if self.use_res:
            return x + self.block(x)
        return self.block(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(inplace=True)
        )
        self.blocks = nn.Sequential(
            InvertedResidual(16, 16, 1, 4),  # residual
            InvertedResidual(16, 24, 2, 4),  # stride 2, no residual
            InvertedResidual(24, 24, 1, 4),  # residual
        )
        self.head = nn.Sequential(nn.Conv2d(24, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU6(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, num_classes))

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))


# ---------------------------------------------------------------------------
# 6. Squeeze-and-excitation
# ---------------------------------------------------------------------------


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x):
        s = self.pool(x)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s


class SENet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.se = SqueezeExcite(32)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        x = F.relu(self.se(x))
        return self.fc(torch.flatten(self.pool(x), 1))


# ---------------------------------------------------------------------------
# 7. U-Net (2 levels)
# ---------------------------------------------------------------------------


class DoubleConv(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.net(x)


class UNet(nn.Module):
    def __init__(self, cin: int = 3, n_classes: int = 2):
        super().__init__()
        self.enc1 = DoubleConv(cin, 8)
        self.pool1 = nn.MaxPool2d(2)
        self.enc2 = DoubleConv(8, 16)
        self.pool2 = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(16, 32)
        self.up2 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.dec2 = DoubleConv(32 + 16, 16)
        self.dec1 = DoubleConv(16 + 8, 8)
        self.out = nn.Conv2d(8, n_classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool1(e1))
        b = self.bottleneck(self.pool2(e2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
        u1 = F.interpolate(d2, scale_factor=2.0, mode="nearest")
        d1 = self.dec1(torch.cat([u1, e1], dim=1))
        return self.out(d1)


# ---------------------------------------------------------------------------
# 8. Dilated FCN
# ---------------------------------------------------------------------------


class FCNDilated(nn.Module):
    def __init__(self, n_classes: int = 5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=2, dilation=2)
        self.conv3 = nn.Conv2d(16, 32, 3, padding=4, dilation=4)
        self.conv4 = nn.Conv2d(32, 32, 3, padding="same", dilation=2)
        self.classifier = nn.Conv2d(32, n_classes, 1)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(x))
        return self.classifier(x)


# ---------------------------------------------------------------------------
# 9. Causal TCN
# ---------------------------------------------------------------------------


class Chomp1d(nn.Module):
    def __init__(self, chomp: int):
        super().__init__()
        self.chomp = chomp

    def forward(self, x):
        return x[..., : -self.chomp]


class TemporalBlock(nn.Module):
    """Causal block; padding by slicing (``left_pad=False``) or F.pad on the left."""

    def __init__(self, cin: int, cout: int, kernel: int, dilation: int, left_pad: bool = False):
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.left_pad = left_pad
        conv_pad = 0 if left_pad else self.pad
        self.conv1 = nn.Conv1d(cin, cout, kernel, padding=conv_pad, dilation=dilation)
        self.conv2 = nn.Conv1d(cout, cout, kernel, padding=conv_pad, dilation=dilation)
        self.chomp = Chomp1d(self.pad)
        self.downsample = nn.Conv1d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        if self.left_pad:
            out = F.relu(self.conv1(F.pad(x, (self.pad, 0))))
            out = F.relu(self.conv2(F.pad(out, (self.pad, 0))))
        else:
            out = F.relu(self.chomp(self.conv1(x)))
            out = F.relu(self.conv2(out)[..., : -self.pad])
        res = x if self.downsample is None else self.downsample(x)
        return F.relu(out + res)


class TCN(nn.Module):
    def __init__(self, cin: int = 4, hidden: int = 16, n_out: int = 3):
        super().__init__()
        self.blocks = nn.Sequential(
            TemporalBlock(cin, hidden, 3, 1),  # slicing, 1x1 downsample residual
            TemporalBlock(hidden, hidden, 3, 2),  # slicing
            TemporalBlock(hidden, hidden, 3, 4, left_pad=True),  # F.pad on the left
        )
        self.fc = nn.Linear(hidden, n_out)

    def forward(self, x):
        y = self.blocks(x)
        return self.fc(y[:, :, -1])


# ---------------------------------------------------------------------------
# 10. 3-d CNN
# ---------------------------------------------------------------------------


class CNN3d(nn.Module):
    def __init__(self, n_classes: int = 4):
        super().__init__()
        self.conv1 = nn.Conv3d(1, 8, 3, padding=1)
        self.pool1 = nn.AvgPool3d(2)  # 12 -> 6
        self.conv2 = nn.Conv3d(8, 16, 3, stride=2, padding=1)  # 6 -> 3
        self.conv3 = nn.Conv3d(16, 16, 3, padding=1)
        self.pool2 = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(16, n_classes)

    def forward(self, x):
        x = self.pool1(F.relu(self.conv1(x)))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        return self.fc(torch.flatten(self.pool2(x), 1))


# ---------------------------------------------------------------------------
# 11. FNO-shaped 1-d net
# ---------------------------------------------------------------------------


class FNOLayer(nn.Module):
    def __init__(self, width: int, act: bool = True):
        super().__init__()
        self.spectral = nn.Conv1d(width, width, 5, padding=2, padding_mode="circular")
        self.w = nn.Conv1d(width, width, 1)
        self.act = act

    def forward(self, x):
        x = self.spectral(x) + self.w(x)
        return F.gelu(x) if self.act else x


class FNOStyle(nn.Module):
    """Input (batch, 2, n): channel 0 the field, channel 1 the grid coordinate."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.lift = nn.Conv1d(2, width, 1)
        self.layers = nn.ModuleList(FNOLayer(width, act=(i < 3)) for i in range(4))
        self.proj1 = nn.Conv1d(width, 64, 1)
        self.proj2 = nn.Conv1d(64, 1, 1)

    def forward(self, x):
        x = self.lift(x)
        for layer in self.layers:
            x = layer(x)
        return self.proj2(F.gelu(self.proj1(x)))


def _fno_inputs():
    n = 64
    field = torch.randn(2, 1, n)
    grid = torch.linspace(0, 1, n).expand(2, 1, n)
    return (torch.cat([field, grid], dim=1),)


# ---------------------------------------------------------------------------
# 12. GCN on Zachary's karate club
# ---------------------------------------------------------------------------


def karate_normalized_adjacency() -> torch.Tensor:
    """D^-1/2 (A + I) D^-1/2 for networkx's karate_club_graph (binary edges)."""
    import networkx as nx

    g = nx.karate_club_graph()
    n = g.number_of_nodes()
    a = torch.eye(n)
    for u, v in g.edges():
        a[u, v] = 1.0
        a[v, u] = 1.0
    d_inv_sqrt = a.sum(1).rsqrt()
    return d_inv_sqrt[:, None] * a * d_inv_sqrt[None, :]


class GCN(nn.Module):
    def __init__(self, n_features: int = 34, hidden: int = 16, n_classes: int = 2):
        super().__init__()
        self.register_buffer("adj", karate_normalized_adjacency())
        self.weight1 = nn.Parameter(torch.empty(n_features, hidden))
        nn.init.xavier_uniform_(self.weight1)
        self.lin2 = nn.Linear(hidden, n_classes, bias=False)

    def forward(self, x):
        h = F.relu(self.adj @ (x @ self.weight1))
        return self.adj @ self.lin2(h)


# ---------------------------------------------------------------------------
# 13. Data-dependent control flow in one submodule
# ---------------------------------------------------------------------------


class Gate(nn.Module):
    """No conv inside; branches on the *value* of its input (untraceable by fx)."""

    def forward(self, x):
        if x.mean() > 0:
            return torch.tanh(x)
        return torch.sigmoid(x)


class DataDependent(nn.Module):
    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.gate = Gate()
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, n_classes)

    def forward(self, x):
        x = self.gate(self.conv1(x))
        x = F.relu(self.conv2(x))
        return self.fc(torch.flatten(self.pool(x), 1))


# ---------------------------------------------------------------------------
# 14. Shared conv (one module called twice)
# ---------------------------------------------------------------------------


class SharedConv(nn.Module):
    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.shared = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, n_classes)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(self.shared(x))
        x = F.relu(self.shared(x)) + x
        return self.fc(torch.flatten(self.pool(x), 1))


# ---------------------------------------------------------------------------
# 15. Functional conv with owned weights
# ---------------------------------------------------------------------------


class FunctionalConv(nn.Module):
    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(16, 3, 3, 3))
        self.bias = nn.Parameter(torch.empty(16))
        self.weight1d = nn.Parameter(torch.empty(8, 16, 3))
        self.bias1d = nn.Parameter(torch.empty(8))
        self.fc_weight = nn.Parameter(torch.empty(n_classes, 8))
        self.fc_bias = nn.Parameter(torch.zeros(n_classes))
        for w, b in ((self.weight, self.bias), (self.weight1d, self.bias1d)):
            nn.init.kaiming_uniform_(w, a=5 ** 0.5)
            bound = 1.0 / (w[0].numel() ** 0.5)
            nn.init.uniform_(b, -bound, bound)
        nn.init.xavier_uniform_(self.fc_weight)

    def forward(self, x):
        x = F.relu(F.conv2d(x, self.weight, self.bias, stride=2, padding=1))  # (B,16,16,16)
        x = F.avg_pool2d(x, 2)  # (B,16,8,8)
        b, c, h, w = x.shape
        x = x.reshape(b, c, h * w)  # (B,16,64)
        x = F.relu(F.conv1d(x, self.weight1d, self.bias1d, padding=1))  # (B,8,64)
        return F.linear(x.mean(-1), self.fc_weight, self.fc_bias)


# ---------------------------------------------------------------------------
# 16. Non-tensor forward arguments
# ---------------------------------------------------------------------------


class NonTensorArgs(nn.Module):
    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, n_classes)

    def forward(self, x, scale: float = 1.0, mode: str = "sum"):
        h = F.relu(self.conv1(x))
        if scale != 1.0:
            h = h * scale
        y = F.relu(self.conv2(h))
        if mode == "sum":
            y = y + h
        elif mode == "max":
            y = torch.maximum(y, h)
        else:
            raise ValueError(f"unknown mode {mode!r}")
        y = F.adaptive_avg_pool2d(y, 1)
        return self.fc(torch.flatten(y, 1))


# ---------------------------------------------------------------------------
# 17. Pool variety
# ---------------------------------------------------------------------------


class Pools(nn.Module):
    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.maxpool = nn.MaxPool2d(2)  # (31,29) -> (15,14)
        self.avg2d = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)  # -> (8,8)
        self.adaptive = nn.AdaptiveAvgPool2d((3, 5))  # -> (3,5)
        self.avg1d = nn.AvgPool1d(3, stride=2)  # 15 -> 7
        self.conv1d = nn.Conv1d(8, 4, 1)
        self.fc = nn.Linear(4 * 7, n_classes)

    def forward(self, x):
        x = F.relu(self.conv(x))
        x = self.maxpool(x)
        x = self.avg2d(x)
        x = self.adaptive(x)
        x = torch.flatten(x, 2)  # (B, 8, 15)
        x = self.avg1d(x)  # (B, 8, 7)
        x = F.relu(self.conv1d(x))
        return self.fc(torch.flatten(x, 1))


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------


def _img(c: int = 3, h: int = 32, w: int = 32, batch: int = 2) -> Callable[[], tuple]:
    return lambda: (torch.randn(batch, c, h, w),)


def _entries() -> list[ZooEntry]:
    E = ZooEntry
    return [
        E("resnet_basic", ResNetBasic, _img(), convs=6, avg_pools=1, max_pools=0, graph_convs=0, traceable=True),
        E("resnet_bottleneck", ResNetBottleneck, _img(), convs=12, avg_pools=1, max_pools=1, graph_convs=0,
          traceable=True),
        E("vgg", VGG, _img(), convs=5, avg_pools=1, max_pools=2, graph_convs=0, traceable=True),
        E("densenet", DenseNet, _img(), convs=7, avg_pools=2, max_pools=0, graph_convs=0, traceable=True),
        E("mobilenetv2", MobileNetV2, _img(), convs=11, avg_pools=1, max_pools=0, graph_convs=0, traceable=True),
        E("squeeze_excite", SENet, _img(), convs=4, avg_pools=2, max_pools=0, graph_convs=0, traceable=True),
        E("unet", UNet, _img(3, 36, 44), convs=11, avg_pools=0, max_pools=2, graph_convs=0, traceable=True),
        E("fcn_dilated", FCNDilated, _img(3, 33, 31), convs=5, avg_pools=0, max_pools=0, graph_convs=0,
          traceable=True),
        E("tcn_causal", TCN, lambda: (torch.randn(2, 4, 64),), convs=7, avg_pools=0, max_pools=0, graph_convs=0,
          traceable=True),
        E("cnn3d", CNN3d, lambda: (torch.randn(2, 1, 12, 12, 12),), convs=3, avg_pools=2, max_pools=0,
          graph_convs=0, traceable=True),
        E("fno_style", FNOStyle, _fno_inputs, convs=11, avg_pools=0, max_pools=0, graph_convs=0, traceable=True),
        E("gcn", GCN, lambda: (torch.eye(34),), convs=0, avg_pools=0, max_pools=0, graph_convs=2, traceable=True),
        E("data_dependent", DataDependent, _img(), convs=2, avg_pools=1, max_pools=0, graph_convs=0,
          traceable=False),
        E("shared_conv", SharedConv, _img(), convs=3, avg_pools=1, max_pools=0, graph_convs=0, traceable=True),
        E("functional_conv", FunctionalConv, _img(), convs=2, avg_pools=1, max_pools=0, graph_convs=0,
          traceable=True),
        # Plain symbolic_trace makes proxies of `scale` and `mode` too, so `if scale != 1.0` raises;
        # it traces with concrete_args={"scale": 1.0, "mode": "sum"}.
        E("nontensor_args", NonTensorArgs, _img(), convs=2, avg_pools=1, max_pools=0, graph_convs=0,
          traceable=False),
        E("pools", Pools, _img(3, 31, 29), convs=2, avg_pools=3, max_pools=1, graph_convs=0, traceable=True),
    ]


ZOO: dict[str, ZooEntry] = {e.name: e for e in _entries()}
