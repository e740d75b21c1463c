"""A small CNN for small images: the quickstart backbone, fast on two CPU cores."""

from torch import nn


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SmallConvNet(nn.Module):
    """conv-BN-ReLU blocks of ``widths`` channels with 2x2 max-pooling between them, then
    global average pooling: (B, 3, H, W) -> (B, widths[-1])."""

    def __init__(self, widths=(32, 64, 128)):
        super().__init__()
        layers, in_channels = [], 3
        for i, width in enumerate(widths):
            if i:
                layers.append(nn.MaxPool2d(2))
            layers.append(_block(in_channels, width))
            in_channels = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.out_features = in_channels

    def forward(self, x):
        return self.features(x)
