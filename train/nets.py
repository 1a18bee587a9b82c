"""The networks, written here (no torchvision).

Every network maps a (B, C, H, W) batch to (points (B, N, 2) as fractions of the input, presence
logit (B,)). Regression heads predict the fractions directly; the heatmap head decodes 1/4
resolution heatmaps with a soft-argmax, which is differentiable and exports as plain ONNX ops.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(cin, cout, k=3, s=1, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True) if act is True else act)
    return nn.Sequential(*layers)


class RegressionHead(nn.Module):
    def __init__(self, cin: int, n_points: int, hidden: int = 0, dropout: float = 0.0):
        super().__init__()
        self.n = n_points
        layers: list[nn.Module] = [nn.Flatten()]
        if hidden:
            layers += [nn.Linear(cin, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            cin = hidden
        self.body = nn.Sequential(*layers)
        self.points = nn.Linear(cin, n_points * 2)
        self.presence = nn.Linear(cin, 1)
        nn.init.zeros_(self.points.weight)
        nn.init.constant_(self.points.bias, 0.5)

    def forward(self, feat):
        f = self.body(feat)
        return self.points(f).view(-1, self.n, 2), self.presence(f).squeeze(1)


# --- the seeds' networks -------------------------------------------------------------------

class NoseNet(nn.Module):
    """The nose-tip net: 3 conv layers on 80x60 greyscale, then two fully connected layers."""

    def __init__(self, n_points=1, channels=1, size=(80, 60)):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 5, padding=2), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        )
        w, h = size
        self.head = RegressionHead(32 * (h // 8) * (w // 8), n_points, hidden=128, dropout=0.2)

    def forward(self, x):
        return self.head(self.features(x))


class ImmNet(nn.Module):
    """The 58-point net: 5 conv layers on 240x180, then two fully connected layers."""

    def __init__(self, n_points=58, channels=1, size=(240, 180)):
        super().__init__()
        chans = [channels, 16, 32, 48, 64, 96]
        layers = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        w, h = size
        self.head = RegressionHead(96 * (h // 32) * (w // 32), n_points, hidden=256, dropout=0.2)

    def forward(self, x):
        return self.head(self.features(x))


class KaggleNet(nn.Module):
    """The Kaggle VGG-style net: pairs of 3x3 convs with BatchNorm and LeakyReLU on 96x96."""

    def __init__(self, n_points=15, channels=1, size=(96, 96)):
        super().__init__()
        chans = [channels, 32, 64, 96, 128]
        layers = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [
                nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.1),
                nn.Conv2d(b, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.1),
                nn.MaxPool2d(2),
            ]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(3))
        self.head = RegressionHead(128 * 9, n_points, hidden=256, dropout=0.3)

    def forward(self, x):
        return self.head(self.features(x))


# --- ResNet-18 ------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)), inplace=True)
        y = self.b2(self.c2(y))
        return F.relu(y + (x if self.down is None else self.down(x)), inplace=True)


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016) with a global-pool regression head."""

    def __init__(self, n_points=68, channels=1, size=(128, 128), width=64):
        super().__init__()
        w = width
        self.stem = nn.Sequential(
            nn.Conv2d(channels, w, 7, 2, 3, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        stages, cin = [], w
        for i, cout in enumerate([w, 2 * w, 4 * w, 8 * w]):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = RegressionHead(cin, n_points)

    def forward(self, x):
        return self.head(self.pool(self.stages(self.stem(x))))


# --- the real-time backbone -----------------------------------------------------------------

class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        mid = cin * expand
        layers = []
        if expand != 1:
            layers.append(conv_bn(cin, mid, 1))
        layers += [conv_bn(mid, mid, 3, stride, groups=mid), conv_bn(mid, cout, 1, act=False)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class SoftArgmax(nn.Module):
    """(B, N, h, w) heatmap logits -> (B, N, 2) expected cell centres as fractions (0..1)."""

    def __init__(self, h: int, w: int, beta: float = 1.0):
        super().__init__()
        self.register_buffer("xs", (torch.arange(w).float() + 0.5) / w, persistent=False)
        self.register_buffer("ys", (torch.arange(h).float() + 0.5) / h, persistent=False)
        self.beta = beta

    def forward(self, hm):
        b, n, h, w = hm.shape
        p = torch.softmax(hm.reshape(b, n, h * w) * self.beta, dim=-1).reshape(b, n, h, w)
        x = (p.sum(dim=2) * self.xs).sum(dim=-1)
        y = (p.sum(dim=3) * self.ys).sum(dim=-1)
        return torch.stack([x, y], dim=-1)


class MobileHeatmap(nn.Module):
    """A MobileNetV2-style backbone with a light U-shaped decoder to 1/4-resolution heatmaps.

    Built for the runtime: small (well under 10 MB), a few MFLOPs at 128x128, and every op is a
    plain conv, resize or softmax that ONNX Runtime runs fast on one CPU thread.
    """

    # (expand, out channels, repeats, stride)
    CONFIG = [(1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 3, 2), (4, 64, 3, 2), (4, 96, 2, 1)]

    def __init__(self, n_points=68, channels=1, size=(128, 128), width: float = 1.0, decoder: int = 48):
        super().__init__()
        def c(x):
            return max(8, int(x * width + 4) // 8 * 8)
        self.n = n_points
        stem = c(24)
        self.stem = conv_bn(channels, stem, 3, 2)  # 1/2
        blocks, cin, self.taps = [], stem, []
        for expand, cout, repeats, stride in self.CONFIG:
            for i in range(repeats):
                blocks.append(InvertedResidual(cin, c(cout), stride if i == 0 else 1, expand))
                cin = c(cout)
            self.taps.append(len(blocks) - 1)
        self.blocks = nn.ModuleList(blocks)
        # stage outputs: 1/2 (16), 1/4 (24), 1/8 (32), 1/16 (64), 1/16 (96)
        skip4, skip8 = c(24), c(32)
        d = decoder
        self.lat16 = conv_bn(cin, d, 1)
        self.lat8 = conv_bn(skip8, d, 1)
        self.lat4 = conv_bn(skip4, d, 1)
        self.up8 = nn.Sequential(conv_bn(d, d, 3, groups=d), conv_bn(d, d, 1))
        self.up4 = nn.Sequential(conv_bn(d, d, 3, groups=d), conv_bn(d, d, 1))
        self.heat = nn.Conv2d(d, n_points, 1)
        w, h = size
        self.decode = SoftArgmax(h // 4, w // 4, beta=1.0)
        self.presence = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 1))

    def forward(self, x):
        x = self.stem(x)
        feats = {}
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i in self.taps:
                feats[self.taps.index(i)] = x
        f4, f8, f16 = feats[1], feats[2], feats[4]
        y = self.lat16(f16)
        y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False) + self.lat8(f8)
        y = self.up8(y)
        y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False) + self.lat4(f4)
        y = self.up4(y)
        hm = self.heat(y)
        if self.training:
            self.heatmaps = hm  # read by the auxiliary heatmap loss (train.losses.heatmap_ce)
        return self.decode(hm), self.presence(f16).squeeze(1)


NETS = {
    "nose": NoseNet,
    "imm": ImmNet,
    "kaggle": KaggleNet,
    "resnet18": ResNet18,
    "mobile": MobileHeatmap,
}


def build(name: str, n_points: int, channels: int, size: tuple[int, int], **kw) -> nn.Module:
    try:
        cls = NETS[name]
    except KeyError:
        raise ValueError(f"unknown network {name!r}; choose from {', '.join(NETS)}") from None
    return cls(n_points=n_points, channels=channels, size=size, **kw)


def build_model(task) -> nn.Module:
    """The network of a `train.tasks.Task`, sized for its schema's points."""
    from fkp_live import schemas

    return build(task.net, schemas.get(task.schema).n, task.channels, task.size, **task.net_args)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
