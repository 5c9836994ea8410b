"""Frozen DINOv2 ViT-S/14 patch features, reproducing the old extractor exactly (DESIGN.md, Pipeline 1-6)
so that existing ``memory.npz`` embeddings keep their meaning.

The position grid is resized once at load time with the old extractor's plain bicubic interpolation
(timm's own resample uses antialiasing and would give different embeddings); the model is never
touched afterwards, so concurrent ``extract`` calls from several threads are safe.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import huggingface_hub
import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ConfigError
from ..settings import MODEL_NAME, PATCH_SIZE, PRECISIONS
from .letterbox import Letterbox

log = logging.getLogger(__name__)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
LAYERS = (9, 10, 11)
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

_WEIGHTS_HELP = (
    "set BDI_WEIGHTS to a local .safetensors/.pth checkpoint of the model, to 'random' (demos and tests "
    "only), or keep 'hub' with HF_HUB_OFFLINE=1 and a filled Hugging Face cache"
)


_HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's checkpoint names on the hub, preferred first
_HUB_TIMEOUT_S = 5.0


def _hub_files(model_name: str) -> tuple[str, str | None, tuple[str, ...]]:
    """(repo id, revision, checkpoint file names to try) of the model's pretrained weights on the hub."""
    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None or not cfg.hf_hub_id:
        raise ValueError(f"timm knows no Hugging Face hub id for {model_name}")
    repo_id, _, revision = cfg.hf_hub_id.partition("@")
    return repo_id, revision or None, (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HUB_FILES


def _cached_hub_checkpoint(model_name: str) -> str | None:
    """The pretrained checkpoint's file in the local Hugging Face cache, or None; never the network."""
    repo_id, revision, names = _hub_files(model_name)
    for name in names:
        cached = huggingface_hub.try_to_load_from_cache(repo_id, name, revision=revision)
        if isinstance(cached, str):
            return cached
    return None


def _hub_checkpoint(model_name: str) -> str:
    """The local file of the model's pretrained checkpoint, asking the network as little as possible.

    The local Hugging Face cache first (no network at all, so HF_HUB_OFFLINE=1 with a filled cache
    works); only when nothing is cached, the hub: ONE metadata request with a short timeout
    (HF_HUB_ETAG_TIMEOUT, else 5 s) and no retries, then the download. Left to itself, timm's
    download retries an unreachable hub five times per file name with backoff (about 50 s) before failing.
    """
    cached = _cached_hub_checkpoint(model_name)
    if cached is not None:
        return cached
    repo_id, revision, names = _hub_files(model_name)
    _single_hub_log_path()
    for name in names[:-1]:
        try:
            return _download(repo_id, name, revision or None)
        except huggingface_hub.errors.EntryNotFoundError:
            continue  # an older repo without the safetensors file
    return _download(repo_id, names[-1], revision or None)


def _download(repo_id: str, name: str, revision: str | None) -> str:
    timeout = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or _HUB_TIMEOUT_S)
    url = huggingface_hub.hf_hub_url(repo_id, name, revision=revision)
    huggingface_hub.get_hf_file_metadata(url, timeout=timeout)  # one request, no retries: fails at once offline
    return huggingface_hub.hf_hub_download(repo_id, name, revision=revision)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().split("\n", 1)[0]


def _single_hub_log_path() -> None:
    """huggingface_hub gives its logger a stderr handler of its own and also lets its records reach the
    root logger's, so each of its warnings would be printed twice; the root's handler is enough."""
    if logging.getLogger().handlers:
        hub_logger = logging.getLogger("huggingface_hub")
        for handler in list(hub_logger.handlers):
            if type(handler) is logging.StreamHandler:
                hub_logger.removeHandler(handler)


def preprocess(bgr: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Letterbox an HxWx3 uint8 BGR image onto a black ``size`` square, ImageNet-normalised, CHW float32."""
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 BGR image, got shape {bgr.shape} dtype {bgr.dtype}")
    height, width = bgr.shape[:2]
    box = Letterbox.fit(width, height, size)
    image = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    canvas = Image.new("RGB", (size, size), (0, 0, 0))
    canvas.paste(image.resize((box.width, box.height), Image.BICUBIC), (box.x0, box.y0))
    array = (np.asarray(canvas, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(array.transpose(2, 0, 1)), box


def _resolve_device(spec: str) -> tuple[torch.device, str]:
    """The torch device and the name /health reports (the string a user would pass)."""
    name = spec.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cpu":
        return torch.device("cpu"), name
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("Setting BDI_DEVICE=mps is not available on this machine; use BDI_DEVICE=auto or cpu.")
        return torch.device("mps"), name
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        index = int(name[5:]) if ":" in name else 0
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if index >= count:
            raise ConfigError(
                f"Setting BDI_DEVICE={name} is not available: this machine has {count} usable CUDA device(s); "
                "use BDI_DEVICE=auto or cpu."
            )
        return torch.device(name), name
    raise ConfigError(f"Setting BDI_DEVICE={spec!r} is not one of auto, cpu, cuda, cuda:N, mps.")


def _unwrap(checkpoint: object) -> dict[str, torch.Tensor]:
    """The backbone's tensors under timm key names, from timm or original DINOv2 checkpoints."""
    while isinstance(checkpoint, Mapping):
        wrappers = ("state_dict", "model", "teacher")
        inner = next((checkpoint[k] for k in wrappers if isinstance(checkpoint.get(k), Mapping)), None)
        if inner is None:
            break
        checkpoint = inner
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"the file holds a {type(checkpoint).__name__}, not a state dict")
    tensors: dict[str, torch.Tensor] = {}
    has_backbone = any(str(k).removeprefix("module.").startswith("backbone.") for k in checkpoint)
    for key, value in checkpoint.items():
        if not isinstance(value, torch.Tensor):
            continue
        key = str(key).removeprefix("module.")
        if has_backbone:  # a DINOv2 training checkpoint: the heads next to the backbone are not ours
            if not key.startswith("backbone."):
                continue
            key = key.removeprefix("backbone.")
        if key != "mask_token":
            tensors[key] = value
    return tensors


def _state_dict_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """Hash of names, shapes and float32 values, so the same weights give the same hash in any format."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{key}:{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def _resize_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """Old extractor's resize: CLS position kept, patch grid bicubic (align_corners=False, no antialias)."""
    prefix, patches = pos_embed[:, :1], pos_embed[:, 1:]
    side = math.isqrt(patches.shape[1])
    if side * side != patches.shape[1]:
        raise ValueError(f"pos_embed has {patches.shape[1]} patch positions, not a square grid")
    dim = patches.shape[-1]
    patches = patches.float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)
    return torch.cat([prefix.float(), patches], dim=1)


def _check_settings(input_size: int, precision: str) -> None:
    if input_size <= 0 or input_size % PATCH_SIZE:
        raise ConfigError(f"Setting BDI_INPUT_SIZE={input_size} is not a positive multiple of {PATCH_SIZE}.")
    if precision not in PRECISIONS:
        raise ConfigError(f"Setting BDI_PRECISION={precision!r} is not one of {', '.join(PRECISIONS)}.")


def _fingerprint(
    model_name: str, input_size: int, weights_label: str, state: Mapping[str, torch.Tensor], precision: str
) -> dict[str, Any]:
    """What every memory version records about the extractor that built it."""
    return {
        "model": model_name,
        "input_size": input_size,
        "layers": list(LAYERS),
        "weights": weights_label,
        "weights_sha256": _state_dict_sha256(state),
        "precision": precision,
    }


def extractor_fingerprint(
    input_size: int, weights: str, precision: str = "fp32", model_name: str = MODEL_NAME
) -> dict[str, Any]:
    """The ``fingerprint`` a ``FeatureExtractor`` with these settings would have, from the weights alone: the model
    is neither built at ``input_size`` nor moved to a device (with BDI_WEIGHTS=random the seeded weights still
    come from one default-size model; a checkpoint file is only read). A bundle import checks a memory against
    the running settings with it."""
    _check_settings(input_size, precision)
    state, _, weights_label = FeatureExtractor._load_weights(weights, model_name)
    return _fingerprint(model_name, input_size, weights_label, state, precision)


def offline_extractor_fingerprint(
    input_size: int, weights: str, precision: str = "fp32", model_name: str = MODEL_NAME
) -> dict[str, Any]:
    """``extractor_fingerprint`` without ever asking the network: with BDI_WEIGHTS=hub and nothing in the local
    cache, the fingerprint without ``weights_sha256`` (None), which says the weights could not be checked."""
    if weights.strip().lower() == "hub" and _cached_hub_checkpoint(model_name) is None:
        _check_settings(input_size, precision)
        return {"model": model_name, "input_size": input_size, "layers": list(LAYERS), "weights": "hub",
                "weights_sha256": None, "precision": precision}
    return extractor_fingerprint(input_size, weights, precision, model_name)


class FeatureExtractor:
    """The frozen backbone: images in, L2-normalised (B, H*W, 1152) patch embeddings out."""

    def __init__(
        self,
        input_size: int = 448,
        weights: str = "hub",
        device: str = "auto",
        model_name: str = MODEL_NAME,
        precision: str = "fp32",
    ) -> None:
        _check_settings(input_size, precision)
        self.device, self.device_name = _resolve_device(device)
        self.precision = precision
        if precision == "fp16" and self.device.type == "cpu":
            log.warning("BDI_PRECISION=fp16 on the CPU is several times slower than fp32; use bf16 or fp32 there.")
        self.model_name = model_name
        self.input_size = input_size
        side = input_size // PATCH_SIZE
        self.grid = (side, side)
        self.layers = LAYERS
        state, self.weights_source, weights_label = self._load_weights(weights, model_name)
        self.fingerprint = _fingerprint(model_name, input_size, weights_label, state, precision)
        self._model = self._build(state)
        self.embed_dim = self._model.embed_dim * len(LAYERS)

    @staticmethod
    def _load_weights(weights: str, model_name: str) -> tuple[dict[str, torch.Tensor], str, str]:
        """(state dict with the checkpoint's own position grid, human source text, fingerprint label)."""
        keyword = weights.strip().lower()
        if keyword == "random":
            log.warning(
                "BDI_WEIGHTS=random: the backbone is RANDOMLY INITIALISED (seeded), NOT pretrained; "
                "anomaly scores mean nothing. Use it for demos and tests only."
            )
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                state = timm.create_model(model_name, pretrained=False).state_dict()
            return state, "random (seeded, NOT pretrained)", "random"
        if keyword == "hub":
            try:
                checkpoint = _hub_checkpoint(model_name)
            except Exception as exc:
                raise ConfigError(
                    f"Setting BDI_WEIGHTS=hub: the pretrained weights of {model_name} are not in the local Hugging "
                    f"Face cache and could not be downloaded ({type(exc).__name__}: {_first_line(exc)}); "
                    f"{_WEIGHTS_HELP}."
                ) from exc
            try:
                state = timm.create_model(
                    model_name, pretrained=True, pretrained_cfg_overlay={"file": checkpoint}
                ).state_dict()
            except Exception as exc:
                raise ConfigError(
                    f"Setting BDI_WEIGHTS=hub: the cached weights {checkpoint} could not be read "
                    f"({type(exc).__name__}: {_first_line(exc)}); {_WEIGHTS_HELP}."
                ) from exc
            return state, "hub", "hub"
        path = Path(weights.strip()).expanduser()
        try:
            if not path.is_file():
                raise FileNotFoundError(f"no such file: {os.fspath(path)!r}")
            if path.suffix.lower() == ".safetensors":
                from safetensors.torch import load_file

                checkpoint: object = load_file(os.fspath(path), device="cpu")
            elif path.suffix.lower() in {".pth", ".pt"}:
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            else:
                raise ValueError(f"unknown checkpoint type {path.suffix!r}, expected .safetensors, .pth or .pt")
            state = _unwrap(checkpoint)
        except Exception as exc:
            raise ConfigError(
                f"Setting BDI_WEIGHTS={weights!r}: the checkpoint could not be read ({type(exc).__name__}: {exc}); "
                f"{_WEIGHTS_HELP}."
            ) from exc
        return state, os.fspath(path), path.name

    def _build(self, state: dict[str, torch.Tensor]) -> torch.nn.Module:
        """The model at ``input_size`` holding ``state``, its position grid resized the old way."""
        model = timm.create_model(self.model_name, pretrained=False, img_size=self.input_size)
        try:
            if "pos_embed" not in state:
                raise KeyError("pos_embed")
            state = {**state, "pos_embed": _resize_pos_embed(state["pos_embed"], self.grid[0])}
            model.load_state_dict(state, strict=True)
        except Exception as exc:
            raise ConfigError(
                f"Setting BDI_WEIGHTS: the weights do not fit {self.model_name} ({type(exc).__name__}: "
                f"{str(exc)[:500]}); {_WEIGHTS_HELP}."
            ) from exc
        return model.eval().requires_grad_(False).to(self.device)

    def extract(
        self,
        images: Sequence[np.ndarray],
        batch_size: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """(B, H*W, 1152) float32 unit rows, tokens row-major; one forward per ``batch_size`` images
        (all at once when None), ``progress(done, total)`` after each."""
        total = len(images)
        step = batch_size or max(total, 1)
        chunks = []
        for start in range(0, total, step):
            batch = np.stack([preprocess(image, self.input_size)[0] for image in images[start : start + step]])
            chunks.append(self.embed(batch))
            if progress is not None:
                progress(min(start + step, total), total)
        if not chunks:
            return np.empty((0, self.grid[0] * self.grid[1], self.embed_dim), dtype=np.float32)
        return np.concatenate(chunks)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """One forward of (B, 3, S, S) ``preprocess`` outputs: (B, H*W, 1152) float32 unit rows.

        bf16/fp16 run the blocks under autocast; the L2 normalisation is always done in float32."""
        model = self._model
        dtype = AUTOCAST_DTYPES.get(self.precision)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            x = model.norm_pre(model._pos_embed(model.patch_embed(torch.from_numpy(batch).to(self.device))))
            outputs = []
            for index, block in enumerate(model.blocks[: max(LAYERS) + 1]):
                x = block(x)
                if index in LAYERS:
                    outputs.append(x[:, model.num_prefix_tokens :])
            features = torch.cat(outputs, dim=-1).float()
            features = features / (features.norm(dim=-1, keepdim=True) + 1e-8)
            return features.cpu().numpy()
