"""Model factory, model directory format and loading.

A model directory ``models/<name>/`` holds ``weights.pt`` (fp16 state dict,
loaded with ``weights_only=True``) and ``config.json`` (architecture, encoder,
input channels, class codes, working scale, normalisation, per-class reference
colours of the training images, training summary and validation scores; a
``"head"`` entry when the network carries an edge head, :mod:`.head`) and,
where the network can be traced, ``inference.pt``: a frozen TorchScript graph
for CPU inference that loads without segmentation-models-pytorch
(:func:`trace_inference`, recorded as ``"inference_graph"`` in the config).
"""
from __future__ import annotations

import copy
import json
import threading
import hashlib
import warnings
from pathlib import Path
from typing import Any, Callable

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
    "load_model_archive",
    "model_from_parts",
    "model_parts",
    "resolve_device",
    "DEFAULT_MODEL_DIR",
    "describe_network",
    "fuse_batchnorm",
    "trace_inference",
    "GRAPH_FILE",
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


class SegmentationModel:
    """A network together with its configuration.

    ``lock`` serialises use of one instance from several threads (the app
    shares one model between all sessions of a server). ``fused`` is the
    network inference runs: a copy of ``net`` with its batch normalisation
    folded into the convolutions (:func:`fuse_batchnorm`), or the model
    folder's frozen inference graph (:func:`trace_inference`); inference uses
    it when present. A model being trained has none, so inference sees the
    weights as they change.

    ``net`` may be given as ``build``, a function that makes it on first use:
    a model loaded with its inference graph only builds the trainable network
    (and imports segmentation-models-pytorch) when something trains or saves it.
    """

    def __init__(self, net: torch.nn.Module | None = None, config: dict[str, Any] | None = None,
                 device: torch.device | None = None, lock: threading.Lock | None = None,
                 fused: torch.nn.Module | None = None, build: Callable[[], torch.nn.Module] | None = None):
        if net is None and build is None:
            raise ValueError("a SegmentationModel needs a network or a function that builds it")
        if config is None or device is None:
            raise ValueError("a SegmentationModel needs its config and device")
        self._net, self._build = net, build
        self._build_lock = threading.Lock()
        self.config, self.device = config, device
        self.lock = lock if lock is not None else threading.Lock()
        self.fused = fused

    def __repr__(self) -> str:
        return f"SegmentationModel({self.name!r}, {describe_network(self.config)}, {self.device})"

    @property
    def pixel_expert(self):
        """The config's pixel expert (:mod:`.pixel`), built on first use; None when it has none."""
        entry = self.config.get("pixel_expert")
        cached = getattr(self, "_pixel_expert", None)
        if cached is None or cached[0] is not entry:
            from .pixel import expert_of

            cached = self._pixel_expert = (entry, expert_of(self.config))
        return cached[1]

    @property
    def net(self) -> torch.nn.Module:
        """The trainable network (built on first use when the model was loaded with its inference graph)."""
        if self._net is None:
            with self._build_lock:
                if self._net is None:
                    self._net = self._build()
        return self._net

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


def _matches(out: torch.Tensor, ref: torch.Tensor, tolerance: float) -> bool:
    """Same shape, and equal to ``tolerance`` relative to the reference's largest magnitude (at least 1)."""
    return out.shape == ref.shape and torch.allclose(out, ref, rtol=0,
                                                     atol=tolerance * max(1.0, float(ref.abs().max())))


def _as_float32(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A saved (fp16) state dict with its floating-point tensors back in float32."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


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
    if not _matches(fused(x), net.eval()(x), tolerance):
        return None
    return fused


GRAPH_FILE = "inference.pt"


def trace_inference(net: torch.nn.Module, in_channels: int, *, tolerance: float = 1e-3) -> torch.jit.ScriptModule | None:
    """A frozen TorchScript graph of ``net`` for inference on the CPU, or None where one cannot be made.

    The graph is traced from the batch-normalisation-folded copy (:func:`fuse_batchnorm`) and frozen, which
    keeps only the weights the forward pass uses (3.5 MB for PSPNet-ResNet18 against 23 MB of fp16 weights,
    whose encoder carries stages PSPNet never runs) and runs a little faster than the module. Loading it needs
    torch alone: building the network needs segmentation-models-pytorch, whose import (timm, torchvision and
    torch's compiler stack) takes longer than segmenting a photograph's tiles. The graph is checked against
    ``net`` on inputs of other sizes than the one traced, since tiles at a photograph's edge and batches vary.
    torch marks TorchScript as deprecated in favour of ``torch.export``, whose loader imports the same compiler
    stack (2.7 s here); the pinned release reads and writes TorchScript, and wherever tracing, saving or loading
    fails the network is simply built.
    """
    try:
        return _trace_own(copy.deepcopy(net).cpu().eval(), in_channels, tolerance)
    except Exception:  # a network that cannot even be copied to the CPU
        return None


def _trace_own(cpu: torch.nn.Module, in_channels: int, tolerance: float = 1e-3) -> torch.jit.ScriptModule | None:
    """:func:`trace_inference` of a CPU module in evaluation mode that the caller owns (no copy is made)."""
    try:
        base = fuse_batchnorm(cpu, in_channels) or cpu
        g = torch.Generator().manual_seed(0)
        example = torch.randn(1, in_channels, 128, 128, generator=g)
        checks = [torch.randn(2, in_channels, 96, 160, generator=g), torch.randn(1, in_channels, 64, 64, generator=g)]
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # TorchScript's notices about tracing and its future
            graph = torch.jit.freeze(torch.jit.trace(base, example, check_trace=False).eval())
            for x in checks:
                if not _matches(graph(x), cpu(x), tolerance):
                    return None
        return graph
    except Exception:  # a network TorchScript cannot trace: inference builds the network instead
        return None


def _torch_release() -> str:
    """``"2.15.0"`` for ``"2.15.0+cu132"``: CPU and CUDA builds of one release read the same graphs."""
    return torch.__version__.split("+")[0]


def _graph_describes(config: dict[str, Any]) -> dict[str, Any]:
    """What of a config the graph embodies: a config edited since the graph was made does not use it."""
    return {"network": describe_network(config), "in_channels": int(config.get("in_channels", 3)),
            "classes": list(config.get("classes", [])), "head": config.get("head")}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _saved_state(net: torch.nn.Module) -> dict:
    return {k: (v.detach().half() if v.is_floating_point() else v.detach()).cpu() for k, v in net.state_dict().items()}


def model_parts(model: "SegmentationModel") -> tuple[bytes, bytes]:
    """``config.json`` and ``weights.pt`` of ``model`` as bytes (fp16 weights, as :func:`save_model` writes them;
    no inference graph), for an archive; :func:`model_from_parts` reads them back."""
    import io

    buf = io.BytesIO()
    torch.save(_saved_state(model.net), buf)
    config = {k: v for k, v in model.config.items() if k != "inference_graph"}
    return json.dumps(config, indent=1).encode(), buf.getvalue()


def model_from_parts(config: bytes, weights: bytes, *, device: str = "auto", name: str = "uploaded",
                     whose: str = "its") -> SegmentationModel:
    """A model from the bytes of its ``config.json`` and ``weights.pt``; ``ValueError`` saying what is wrong, the
    files named as ``whose`` ones ("its config.json", "the archive's weights.pt"). Nothing is executed: the config
    is JSON, the weights are read with ``weights_only=True``, no graph is read. A config without a name gets
    ``name``."""
    import tempfile

    try:
        cfg = json.loads(config)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{whose} config.json is not valid JSON") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{whose} config.json does not describe a model")
    cfg.pop("inference_graph", None)
    cfg["name"] = cfg.get("name") or name
    with tempfile.TemporaryDirectory(prefix="orelens-model-") as d:
        Path(d, "config.json").write_text(json.dumps(cfg))
        Path(d, "weights.pt").write_bytes(weights)
        try:
            return load_model(d, device=device, trust_graph=False)
        except ValueError as e:
            raise ValueError(str(e).replace(str(Path(d, "config.json")), f"{whose} config.json")
                             .replace(str(Path(d, "weights.pt")), f"{whose} weights.pt")
                             .replace(str(d), "it")) from None


def save_model(path: str | Path, net: torch.nn.Module, config: dict[str, Any]) -> Path:
    """Write ``weights.pt`` (fp16), the frozen inference graph ``inference.pt`` and ``config.json`` into ``path``.

    The config records the graph with the checksum of the weights it was made from and the torch version
    (``"inference_graph"``); :func:`load_model` uses the graph only when both still match.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = _saved_state(net)
    tmp = path / "weights.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(path / "weights.pt")
    config = {k: v for k, v in config.items() if k != "inference_graph"}
    # the graph is traced from the weights as saved (fp16), so that it computes what loading them would
    net_saved = copy.deepcopy(net).cpu().eval()
    net_saved.load_state_dict(_as_float32(state))
    graph = _trace_own(net_saved, int(config.get("in_channels", 3)))
    graph_path = path / GRAPH_FILE
    if graph is not None:
        tmp = path / (GRAPH_FILE + ".tmp")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(graph, str(tmp))
        tmp.replace(graph_path)
        config["inference_graph"] = {"file": GRAPH_FILE, "weights_sha256": _sha256(path / "weights.pt"),
                                     "torch": _torch_release(), "describes": _graph_describes(config)}
    elif graph_path.exists():
        graph_path.unlink()
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return path


_REQUIRED = ("architecture", "encoder", "in_channels", "classes", "scale", "normalization")


MAX_ARCHIVE_BYTES = 1 << 30  # a model archive's config and weights may unpack to this much


def load_model_archive(data: bytes, *, device: str = "auto", name: str | None = None) -> SegmentationModel:
    """A model from a zip holding ``config.json`` and ``weights.pt`` (at its root or in one folder, as the app's
    "Download the fine-tuned model" writes it); ``ValueError`` saying what is wrong.

    Nothing in the archive is executed: the config is JSON, the weights are read with ``weights_only=True`` and an
    inference graph in it is ignored. A model without a name in its config takes the name of its folder in the
    archive, else ``name``, else "uploaded".
    """
    import io
    import zipfile
    import zlib

    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ValueError("not a model archive (not a zip file)") from None
    with z:
        found = {}
        for info in z.infolist():
            parts = [p for p in info.filename.replace("\\", "/").split("/") if p]
            if info.is_dir() or not parts or parts[-1] not in ("config.json", "weights.pt") or len(parts) > 2:
                continue
            folder = parts[0] if len(parts) == 2 else ""
            found.setdefault(folder, {})[parts[-1]] = info
        complete = {f: m for f, m in found.items() if len(m) == 2}
        if len(complete) != 1:
            raise ValueError("not a model archive: it needs one config.json and one weights.pt, at its root or in "
                             "one folder" if not complete else "the archive holds several models; give one at a time")
        folder, members = next(iter(complete.items()))
        if sum(m.file_size for m in members.values()) > MAX_ARCHIVE_BYTES:
            raise ValueError(f"the model archive unpacks to more than {MAX_ARCHIVE_BYTES >> 30} GB")
        parts = {}
        for member, info in members.items():
            try:
                parts[member] = z.read(info)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
                raise ValueError(f"the archive's {member} is damaged ({e}); download or zip the model "
                                 "again") from None
        return model_from_parts(parts["config.json"], parts["weights.pt"], device=device,
                                name=folder or name or "uploaded", whose="the archive's")


def _load_graph(path: Path, config: dict[str, Any]) -> torch.nn.Module | None:
    """The folder's inference graph when it was made from these weights by this torch version, else None."""
    entry = config.get("inference_graph")
    if (not isinstance(entry, dict) or entry.get("torch") != _torch_release()
            or entry.get("describes") != _graph_describes(config)):
        return None
    graph_path = path / str(entry.get("file", GRAPH_FILE))
    if not graph_path.is_file() or entry.get("weights_sha256") != _sha256(path / "weights.pt"):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.load(str(graph_path), map_location="cpu").eval()
    except Exception:
        return None


def _build_net(path: Path, config: dict[str, Any], dev: torch.device) -> torch.nn.Module:
    cfg_path, w_path = path / "config.json", path / "weights.pt"
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
    except Exception:
        # a damaged file (a download cut short), or not one of tensors: torch's own message is about its pickler
        raise ValueError(f"{w_path}: not readable as model weights (the file is damaged or not a weights.pt of "
                         "tensors)") from None
    try:
        net.load_state_dict(_as_float32(state))
    except Exception as e:
        raise ValueError(f"{w_path}: weights do not match the config ({type(e).__name__}: {str(e)[:200]})") from None
    return net.to(dev).eval()


def load_model(path: str | Path | None = None, *, device: str = "auto", trust_graph: bool = True) -> SegmentationModel:
    """Load a model directory.

    On the CPU a folder's inference graph (:func:`save_model`) is used when it matches the weights; the
    trainable network is then built only when first needed (``SegmentationModel.net``). Otherwise the network
    is built now, with its batch normalisation folded for inference. ``trust_graph=False`` never reads a graph
    (a model a user uploaded: only its config and its weights, loaded with ``weights_only=True``, are read).

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
    config.setdefault("name", path.name)
    graph = _load_graph(path, config) if dev.type == "cpu" and trust_graph else None
    if graph is not None:
        model = SegmentationModel(config=config, device=dev, fused=graph, build=lambda: _build_net(path, config, dev))
    else:
        net = _build_net(path, config, dev)
        model = SegmentationModel(net=net, config=config, device=dev,
                                  fused=fuse_batchnorm(net, int(config["in_channels"])))
    try:
        model.pixel_expert  # a damaged or mismatched expert is named now, not at the first image
    except ValueError as e:
        raise ValueError(f"{cfg_path}: {e}") from None
    return model
