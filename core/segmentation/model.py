"""Model factory, model directory format and loading.

A model directory ``models/<name>/`` holds ``weights.pt`` (fp16 state dict,
loaded with ``weights_only=True``) and ``config.json`` (architecture, encoder,
input channels, class codes, working scale, normalisation, per-class reference
colours of the training images, training summary and validation scores; a
``"head"`` entry when the network carries an edge head, :mod:`.head`).
"""
from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..registry import Registry

__all__ = [
    "ARCHITECTURES",
    "create_model",
    "SegmentationModel",
    "save_model",
    "load_model",
    "resolve_device",
    "DEFAULT_MODEL_DIR",
    "describe_network",
    "fuse_batchnorm",
]

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "default"

ARCHITECTURES: Registry = Registry("architecture")


def _smp():
    import segmentation_models_pytorch as smp

    return smp


ARCHITECTURES.add("pspnet", lambda **kw: _smp().PSPNet(**kw), doc="PSPNet (Zhao et al. 2017), the published baseline")
ARCHITECTURES.add("upernet", lambda **kw: _smp().UPerNet(**kw), doc="UPerNet (Xiao et al. 2018)")
ARCHITECTURES.add("unet", lambda **kw: _smp().Unet(**kw), doc="U-Net (Ronneberger et al. 2015)")
ARCHITECTURES.add("fpn", lambda **kw: _smp().FPN(**kw), doc="Feature Pyramid Network (Kirillov et al. 2019)")
ARCHITECTURES.add("deeplabv3plus", lambda **kw: _smp().DeepLabV3Plus(**kw), doc="DeepLabV3+ (Chen et al. 2018)")


def create_model(
    arch: str = "pspnet",
    encoder_name: str = "resnet18",
    *,
    classes: int = 10,
    in_channels: int = 3,
) -> torch.nn.Module:
    """Build an untrained segmentation network.

    Never downloads weights (``encoder_weights=None``).

    Parameters
    ----------
    arch : str
        One of ``ARCHITECTURES.names()``.
    encoder_name : str
        Any segmentation-models-pytorch encoder, e.g. ``"resnet18"``.
    classes : int
        Number of output channels.
    in_channels : int
        Number of input channels (3 for RGB, more with XPL channels).
    """
    factory = ARCHITECTURES.get(arch)
    if classes < 2:
        raise ValueError(f"classes must be at least 2, got {classes}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be at least 1, got {in_channels}")
    try:
        return factory(encoder_name=encoder_name, encoder_weights=None, in_channels=in_channels, classes=classes)
    except KeyError as e:
        raise ValueError(f"unknown encoder {encoder_name!r} for {arch}: {e}") from None


def describe_network(config: dict[str, Any]) -> str:
    """``"pspnet / resnet18"``, with ``" + edge head"`` when the config has one."""
    return f"{config['architecture']} / {config['encoder']}" + (" + edge head" if config.get("head") else "")


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU."""
    device = (device or "auto").lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available; use --device cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


@dataclass
class SegmentationModel:
    """A network together with its configuration.

    ``lock`` serialises use of one instance from several threads (the app
    shares one model between all sessions of a server). ``fused`` is an
    inference copy of ``net`` with its batch normalisation folded into the
    convolutions (:func:`fuse_batchnorm`), made by :func:`load_model`; inference
    uses it when present. A model being trained has none, so inference sees the
    weights as they change.
    """

    net: torch.nn.Module
    config: dict[str, Any]
    device: torch.device
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    fused: torch.nn.Module | None = field(default=None, repr=False)

    @property
    def inference_net(self) -> torch.nn.Module:
        """The network inference runs: ``fused`` when there is one, else ``net``."""
        return self.fused if self.fused is not None else self.net

    @property
    def classes(self) -> list[int]:
        return list(self.config["classes"])

    @property
    def scale(self) -> float:
        return float(self.config.get("scale", 1.0))

    @property
    def in_channels(self) -> int:
        return int(self.config.get("in_channels", 3))

    @property
    def name(self) -> str:
        return str(self.config.get("name", "model"))

    def reference_colors(self) -> dict[int, np.ndarray]:
        """Mean sRGB colour (0-255) of each class in the training images."""
        ref = self.config.get("reference_colors", {})
        return {int(k): np.asarray(v, np.float64) for k, v in ref.items()}


def _fold(module: torch.nn.Module) -> int:
    n = sum(_fold(child) for child in module.children())
    names = list(module._modules)
    for a, b in zip(names, names[1:]):
        conv, bn = module._modules[a], module._modules[b]
        if (type(conv) is torch.nn.Conv2d and type(bn) is torch.nn.BatchNorm2d and bn.track_running_stats
                and bn.num_features == conv.out_channels):
            module._modules[a] = fuse_conv_bn_eval(conv, bn)
            module._modules[b] = torch.nn.Identity()
            n += 1
    return n


@torch.inference_mode()
def fuse_batchnorm(net: torch.nn.Module, in_channels: int, *, tolerance: float = 1e-3) -> torch.nn.Module | None:
    """A copy of an eval-mode ``net`` with each batch normalisation folded into the convolution before it.

    A convolution followed by batch normalisation in evaluation mode is one affine map, so folding them gives
    the same output with about a fifth less work on a CPU. Pairs are found in the order modules are registered
    (a convolution directly followed by its normalisation, as in the ResNet encoders and the decoders'
    convolution blocks); the copy is then checked against ``net`` on a small random input, and None is
    returned when nothing was folded or the outputs differ by more than ``tolerance`` (some network whose
    registration order is not its order of computation).
    """
    fused = copy.deepcopy(net).eval()
    if not _fold(fused):
        return None
    param = next(net.parameters())
    x = torch.randn(1, in_channels, 64, 64, generator=torch.Generator().manual_seed(0)).to(param.device)
    ref, out = net.eval()(x), fused(x)
    if not torch.allclose(out, ref, rtol=0, atol=tolerance * max(1.0, float(ref.abs().max()))):
        return None
    return fused


def save_model(path: str | Path, net: torch.nn.Module, config: dict[str, Any]) -> Path:
    """Write ``weights.pt`` (fp16) and ``config.json`` into ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: (v.detach().half() if v.is_floating_point() else v.detach()).cpu() for k, v in net.state_dict().items()}
    tmp = path / "weights.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(path / "weights.pt")
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return path


_REQUIRED = ("architecture", "encoder", "in_channels", "classes", "scale", "normalization")


def load_model(path: str | Path | None = None, *, device: str = "auto") -> SegmentationModel:
    """Load a model directory.

    Raises
    ------
    ValueError
        Missing folder, config or weights, or a config that lacks a field.
    """
    path = Path(path) if path is not None else DEFAULT_MODEL_DIR
    cfg_path, w_path = path / "config.json", path / "weights.pt"
    if not cfg_path.exists() or not w_path.exists():
        raise ValueError(f"{path}: not a model folder (needs config.json and weights.pt)")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_path}: invalid JSON ({e})") from None
    missing = [k for k in _REQUIRED if k not in config]
    if missing:
        raise ValueError(f"{cfg_path}: missing fields {missing}")
    dev = resolve_device(device)
    try:
        net = create_model(config["architecture"], config["encoder"], classes=len(config["classes"]),
                           in_channels=int(config["in_channels"]))
        if config.get("head"):
            from .head import DEFAULT_HEAD_WIDTH, HeadedNet

            net = HeadedNet(net, len(config["classes"]), int(config["in_channels"]),
                            width=int(config["head"].get("width", DEFAULT_HEAD_WIDTH)))
    except (TypeError, AttributeError) as e:
        raise ValueError(f"{cfg_path}: invalid model description ({e})") from None
    try:
        state = torch.load(w_path, map_location="cpu", weights_only=True)
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except Exception as e:
        raise ValueError(f"{w_path}: weights do not match the config ({type(e).__name__}: {str(e)[:200]})") from None
    net.to(dev).eval()
    config.setdefault("name", path.name)
    return SegmentationModel(net=net, config=config, device=dev, fused=fuse_batchnorm(net, int(config["in_channels"])))
