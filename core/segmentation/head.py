"""A high-resolution edge head on a trained PSPNet.

PSPNet predicts at 1/8 of its input, so a thin magnetite rim or a pentlandite flame a few pixels wide falls
inside one of its output cells. The edge head is a small decoder that starts from PSPNet's 1/8 logits and
decoder features and brings in the encoder's features at 1/4 and 1/2 of the input and the input itself, adding a
correction to PSPNet's upsampled logits at full working resolution. Its last layer starts at zero, so a new head
leaves the network's output unchanged; it is trained with the PSPNet frozen
(``bench/train_edge_head.py``), which takes a fraction of the time a whole network needs.

A model folder whose config has a ``"head"`` entry holds the weights of both, under ``base.`` and ``head.``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .model import _smp

__all__ = ["EdgeHead", "HeadedNet", "DEFAULT_HEAD_WIDTH"]

DEFAULT_HEAD_WIDTH = 32


def _cbr(cin: int, cout: int, k: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _up2(t: torch.Tensor) -> torch.Tensor:
    return F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)


class EdgeHead(nn.Module):
    """Correction to a PSPNet's logits at full input resolution.

    Parameters
    ----------
    classes : int
        Number of output classes of the PSPNet.
    in_channels : int
        Input channels of the network (3 for RGB).
    decoder_channels, stride2_channels, stride4_channels : int
        Channels of the PSPNet's decoder output and of its encoder features at 1/2 and 1/4 of the input.
    width : int
        Channels of the head's layers at 1/4 (half as many at 1/2, 16 at full resolution).
    """

    def __init__(self, classes: int, in_channels: int = 3, *, decoder_channels: int = 512,
                 stride2_channels: int = 64, stride4_channels: int = 64, width: int = DEFAULT_HEAD_WIDTH):
        super().__init__()
        self.dec = nn.Sequential(*_cbr(decoder_channels, width, 1))
        self.s4 = nn.Sequential(*_cbr(classes + width + stride4_channels, width), *_cbr(width, width))
        self.s2 = nn.Sequential(*_cbr(width + stride2_channels, width // 2))
        self.s1 = nn.Sequential(*_cbr(width // 2 + in_channels, 16))
        self.out = nn.Conv2d(16, classes, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x, f2, f4, dec, z8):
        h = _up2(torch.cat([z8, self.dec(dec)], 1))
        h = self.s4(torch.cat([h, f4], 1))
        h = self.s2(torch.cat([_up2(h), f2], 1))
        h = self.s1(torch.cat([_up2(h), x], 1))
        return self.out(h)


class HeadedNet(nn.Module):
    """A segmentation-models-pytorch PSPNet (``base``) with an :class:`EdgeHead` (``head``).

    ``forward`` returns logits at the input's resolution, like the PSPNet alone. With ``freeze_base`` the
    PSPNet's weights take no gradient and its batch-norm statistics and dropout stay in evaluation mode
    whatever ``train()`` is called with.
    """

    def __init__(self, base: nn.Module, classes: int, in_channels: int = 3, *, width: int = DEFAULT_HEAD_WIDTH,
                 freeze_base: bool = False):
        super().__init__()
        if not isinstance(base, _smp().PSPNet):
            raise ValueError(f"an edge head needs a PSPNet from segmentation-models-pytorch, not {type(base).__name__}")
        conv = base.segmentation_head[0]
        enc = list(base.encoder.out_channels)
        self.base = base
        self.head = EdgeHead(classes, in_channels, decoder_channels=conv.in_channels, stride2_channels=enc[1],
                             stride4_channels=enc[2], width=width)
        self.freeze_base = freeze_base
        if freeze_base:
            for p in self.base.parameters():
                p.requires_grad_(False)
            self.base.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_base:
            self.base.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.base.encoder(x)
        dec = self.base.decoder(feats)
        z8 = self.base.segmentation_head[0](dec)
        full = z8
        for layer in list(self.base.segmentation_head)[1:]:  # the PSPNet's own upsampling (and activation)
            full = layer(full)
        return full + self.head(x, feats[1], feats[2], dec, z8)
