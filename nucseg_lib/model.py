"""U-Net with a ResNet-18 encoder (the paper's model), split into encoder, decoder and head.

- :class:`ResNet18Encoder`: torchvision's ResNet-18 (residual blocks with batch
  norm) for one input channel. The paper's encoder downsamples by 16: we use the
  stem (conv 7x7 stride 2 + max-pool), ``layer1``, ``layer2`` and ``layer3``
  (64, 64, 128, 256 channels at strides 2, 4, 8, 16); ``depth=5`` adds
  ``layer4`` (512 channels, stride 32).
- :class:`UNetDecoder`: a cascade of transposed (fractionally-strided)
  convolutions; after each 2x upsampling the encoder features of the same
  scale are concatenated (skip connection) and mixed by two 3x3 convolutions.
  Channel depth halves at each upsampling step, mirroring the encoder where it
  doubles at each downsampling step.
- :class:`SegmentationHead`: a 1x1 convolution to ``out_channels`` logits: 1
  (nucleus probability through a sigmoid) or 3 (background / interior /
  boundary through a softmax, the boundary-aware variant).

Any input size works: :meth:`UNet.forward` pads to a multiple of the stride
(reflection) and crops the output back.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_FILE = "resnet18-f37072fd.pth"


def pick_device(prefer: str | None = None) -> torch.device:
    """``cuda`` when a GPU is present (or ``mps``), else ``cpu``; ``prefer`` overrides."""
    if prefer:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def find_imagenet_weights(path: str | os.PathLike | None = None) -> Path:
    """Locate torchvision's ResNet-18 ImageNet weights without downloading.

    Looks at ``path``, then ``$NUCSEG_RESNET18_WEIGHTS``, then the torch hub cache
    (``$TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth``). Raises
    ``FileNotFoundError`` saying where to put the file when none exists.
    """
    candidates = []
    if path:
        candidates.append(Path(path))
    if os.environ.get("NUCSEG_RESNET18_WEIGHTS"):
        candidates.append(Path(os.environ["NUCSEG_RESNET18_WEIGHTS"]))
    hub = Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILE
    candidates.append(hub)
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"ImageNet ResNet-18 weights not found (looked at: {', '.join(map(str, candidates))}). "
        f"This machine cannot download them; copy {IMAGENET_FILE} from "
        f"https://download.pytorch.org/models/{IMAGENET_FILE} to {hub} or set NUCSEG_RESNET18_WEIGHTS."
    )


class ResNet18Encoder(nn.Module):
    """ResNet-18 feature extractor for 1-channel images; returns features at strides 2, 4, 8, 16 (, 32)."""

    def __init__(self, in_channels: int = 1, depth: int = 4):
        super().__init__()
        from torchvision.models import resnet18

        if depth not in (4, 5):
            raise ValueError("depth must be 4 (16x downsampling, the paper's) or 5 (32x)")
        net = resnet18(weights=None)
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1, self.relu, self.maxpool = net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        self.layer4 = net.layer4 if depth == 5 else None
        self.out_channels = (64, 64, 128, 256, 512)[:depth]

    @property
    def stride(self) -> int:
        return 2**self.depth

    def forward(self, x):
        f1 = self.relu(self.bn1(self.conv1(x)))  # stride 2
        f2 = self.layer1(self.maxpool(f1))  # stride 4
        f3 = self.layer2(f2)  # stride 8
        f4 = self.layer3(f3)  # stride 16
        feats = [f1, f2, f3, f4]
        if self.layer4 is not None:
            feats.append(self.layer4(f4))
        return feats

    def load_imagenet(self, path: str | os.PathLike | None = None) -> None:
        """Load torchvision ImageNet weights; the RGB first convolution is summed into one channel."""
        state = torch.load(find_imagenet_weights(path), map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        if not any(k.startswith("layer4.") for k in state) and self.layer4 is not None:
            raise ValueError("weights file has no layer4")
        if self.layer4 is None:
            state = {k: v for k, v in state.items() if not k.startswith("layer4.")}
        w = state["conv1.weight"]
        if w.shape[1] != self.conv1.in_channels:
            state["conv1.weight"] = (
                w.sum(dim=1, keepdim=True).repeat(1, self.conv1.in_channels, 1, 1) / self.conv1.in_channels
            )
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("layer4.") or self.layer4 is not None]
        if missing or unexpected:
            raise ValueError(f"ImageNet weights do not fit the encoder: missing {missing}, unexpected {unexpected}")


def _conv_bn_relu(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UpBlock(nn.Module):
    """2x transposed convolution, concatenation with a skip feature, two 3x3 convolutions."""

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2)
        self.conv = nn.Sequential(_conv_bn_relu(cout + cskip, cout), _conv_bn_relu(cout, cout))

    def forward(self, x, skip):
        x = self.up(x)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv(x)


class UNetDecoder(nn.Module):
    """Upsampling path from the deepest encoder feature back to input resolution."""

    def __init__(self, encoder_channels: tuple[int, ...], in_channels: int = 1, base: int = 16):
        super().__init__()
        n = len(encoder_channels)
        # channels per decoder stage, deepest first: base * 2**(n-1), ..., base (halving each step)
        outs = [base * 2 ** (n - 1 - i) for i in range(n)]
        skips = list(encoder_channels[:-1][::-1]) + [in_channels]
        cins = [encoder_channels[-1]] + outs[:-1]
        self.blocks = nn.ModuleList(UpBlock(ci, cs, co) for ci, cs, co in zip(cins, skips, outs))
        self.out_channels = outs[-1]

    def forward(self, feats, x):
        skips = feats[:-1][::-1] + [x]
        y = feats[-1]
        for block, skip in zip(self.blocks, skips):
            y = block(y, skip)
        return y


class SegmentationHead(nn.Conv2d):
    """1x1 convolution from decoder channels to class logits."""

    def __init__(self, cin: int, out_channels: int):
        super().__init__(cin, out_channels, kernel_size=1)


class UNet(nn.Module):
    """U-Net with a ResNet-18 encoder; outputs logits of shape (N, out_channels, H, W)."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, depth: int = 4, decoder_base: int = 16):
        super().__init__()
        self.encoder = ResNet18Encoder(in_channels, depth)
        self.decoder = UNetDecoder(self.encoder.out_channels, in_channels, decoder_base)
        self.head = SegmentationHead(self.decoder.out_channels, out_channels)
        self.out_channels = out_channels

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"expected input of shape (N, C, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        s = self.encoder.stride
        ph, pw = (-h) % s, (-w) % s
        if ph or pw:
            mode = "reflect" if (ph < h and pw < w) else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        y = self.head(self.decoder(self.encoder(x), x))
        return y[..., :h, :w]

    def probabilities(self, logits):
        """Sigmoid for 1 output channel, softmax over channels otherwise."""
        return torch.sigmoid(logits) if self.out_channels == 1 else torch.softmax(logits, dim=1)


def build_model(
    out_channels: int = 1,
    init: str = "scratch",
    depth: int = 4,
    decoder_base: int = 16,
    weights: str | os.PathLike | None = None,
) -> UNet:
    """Build a :class:`UNet` initialised as ``init``.

    ``init`` is ``'scratch'`` (random), ``'imagenet'`` (encoder from torchvision's
    ImageNet weights, found by :func:`find_imagenet_weights`; ``weights`` may name
    the file) or a path to a trained-model folder or ``.pt`` state dict whose
    encoder is copied (transfer from another dataset).

    Parameters
    ----------
    out_channels : int
        1 (foreground logit) or 3 (background, interior, boundary).
    init : str
        ``'scratch'``, ``'imagenet'`` or a trained-model folder / ``.pt`` path.
    depth : int
        4 (the encoder down to 1/16 of the input, the report's) or 5 (to 1/32).
    decoder_base : int
        Channels of the decoder's full-resolution stage (they double at each coarser stage).
    weights : path, optional
        The ImageNet weights file (``init='imagenet'``).

    Returns
    -------
    UNet
    """
    model = UNet(1, out_channels, depth, decoder_base)
    if init == "scratch":
        return model
    if init == "imagenet":
        model.encoder.load_imagenet(weights)
        return model
    path = Path(init)
    if path.is_dir():
        path = path / "weights.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"init must be 'scratch', 'imagenet' or a model folder / weights file; {path} does not exist"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    enc = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    model.encoder.load_state_dict(enc)
    return model
