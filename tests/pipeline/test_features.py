"""The extractor against a straight re-implementation of DESIGN.md's Pipeline steps 1-6, on real (random
init) ViT weights saved as local checkpoints; nothing here touches the model hub."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import huggingface_hub
import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from service.errors import ConfigError
from service.pipeline.features import FeatureExtractor, preprocess
from service.pipeline.letterbox import Letterbox
from service.settings import MODEL_NAME

SIZE = 224
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def _synthetic(height: int, width: int, seed: int) -> np.ndarray:
    """A BGR image with structure (gradients, a disc) and noise, so every letterbox pixel matters."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    disc = ((yy - height / 2) ** 2 + (xx - width / 3) ** 2 < (min(height, width) / 3) ** 2) * 90
    base = np.stack([xx * 255 / width, yy * 255 / height, disc + 60], axis=-1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def _reference_features(
    state: dict[str, torch.Tensor], bgr: np.ndarray, size: int, antialias: bool = False
) -> np.ndarray:
    """DESIGN.md Pipeline 1-6 written out plainly, independent of service.features."""
    height, width = bgr.shape[:2]
    scale = min(size / width, size / height)
    new_w, new_h = round(width * scale), round(height * scale)
    rgb = Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))
    canvas = Image.new("RGB", (size, size))
    canvas.paste(rgb.resize((new_w, new_h), Image.BICUBIC), ((size - new_w) // 2, (size - new_h) // 2))
    pixels = ((np.asarray(canvas) / 255.0 - MEAN) / STD).astype(np.float32)
    batch = torch.from_numpy(pixels.transpose(2, 0, 1).copy())[None]

    grid = size // 14
    pos = state["pos_embed"]
    patches = pos[:, 1:].reshape(1, 37, 37, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False, antialias=antialias)
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)
    model = timm.create_model(MODEL_NAME, pretrained=False, img_size=size)
    model.load_state_dict({**state, "pos_embed": torch.cat([pos[:, :1], patches], dim=1)})
    model.eval()
    with torch.no_grad():
        tokens = model.patch_embed(batch)
        tokens = torch.cat([model.cls_token.expand(1, -1, -1), tokens], dim=1) + model.pos_embed
        picked = []
        for index, block in enumerate(model.blocks):
            tokens = block(tokens)
            if index in (9, 10, 11):
                picked.append(tokens[:, 1:])
        out = torch.cat(picked, dim=-1)
        out = out / (out.norm(dim=-1, keepdim=True) + 1e-8)
    return out.numpy()


@pytest.fixture(scope="module")
def checkpoint_state() -> dict[str, torch.Tensor]:
    """Seeded random weights at timm's default 518 (37x37 grid), layer scales near 1 so every block counts."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        state = timm.create_model(MODEL_NAME, pretrained=False).state_dict()
        for key, value in state.items():
            if key.endswith(".gamma"):
                state[key] = torch.empty_like(value).uniform_(0.5, 1.5)
            elif key == "pos_embed":
                state[key] = value * 20
    return state


@pytest.fixture(scope="module")
def checkpoint_files(checkpoint_state, tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("ckpt")
    paths = {
        "safetensors": folder / "timm_names.safetensors",
        "pth": folder / "dinov2_names.pth",
        "teacher": folder / "teacher.pth",
    }
    save_file({k: v.contiguous() for k, v in checkpoint_state.items()}, str(paths["safetensors"]))
    dinov2 = {**checkpoint_state, "mask_token": torch.zeros(1, 384)}
    torch.save(dinov2, paths["pth"])
    torch.save(
        {
            "teacher": {
                **{f"module.backbone.{k}": v for k, v in dinov2.items()},
                "module.dino_head.last_layer.weight": torch.zeros(8, 384),
            },
            "iteration": 7,
        },
        paths["teacher"],
    )
    return {name: str(path) for name, path in paths.items()}


@pytest.fixture(scope="module")
def from_safetensors(checkpoint_files) -> FeatureExtractor:
    return FeatureExtractor(input_size=SIZE, weights=checkpoint_files["safetensors"], device="cpu")


@pytest.fixture(scope="module")
def from_pth(checkpoint_files) -> FeatureExtractor:
    return FeatureExtractor(input_size=SIZE, weights=checkpoint_files["pth"], device="cpu")


@pytest.fixture(scope="module")
def random_extractor() -> FeatureExtractor:
    return FeatureExtractor(input_size=SIZE, weights="random", device="cpu")


def test_parity_with_the_pipeline_for_both_checkpoint_formats(
    checkpoint_state, from_safetensors, from_pth
) -> None:
    image = _synthetic(90, 130, seed=0)
    expected = _reference_features(checkpoint_state, image, SIZE)
    for extractor in (from_safetensors, from_pth):
        got = extractor.extract([image])
        assert got.shape == (1, 256, 1152) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    # the trap: timm's antialiased resample of the position grid gives other embeddings
    antialiased = _reference_features(checkpoint_state, image, SIZE, antialias=True)
    assert np.abs(antialiased - expected).max() > 1e-3


def test_fingerprint_is_the_same_for_the_same_weights(checkpoint_files, from_safetensors, from_pth) -> None:
    a, b = from_safetensors.fingerprint, from_pth.fingerprint
    assert a["weights_sha256"] == b["weights_sha256"]
    assert a == {
        "model": MODEL_NAME,
        "input_size": SIZE,
        "layers": [9, 10, 11],
        "weights": "timm_names.safetensors",
        "weights_sha256": a["weights_sha256"],
        "precision": "fp32",
    }
    assert b["weights"] == "dinov2_names.pth"
    assert from_pth.weights_source == checkpoint_files["pth"]
    # a wrapped training checkpoint at another input size: same weights, same hash
    small = FeatureExtractor(input_size=112, weights=checkpoint_files["teacher"], device="cpu")
    assert small.grid == (8, 8)
    assert small.fingerprint["weights_sha256"] == a["weights_sha256"]


def test_random_weights_are_seeded_and_loud(random_extractor, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="service.pipeline.features"):
        again = FeatureExtractor(input_size=SIZE, weights="random", device="cpu")
    assert any("NOT pretrained" in r.message for r in caplog.records if r.levelno == logging.WARNING)
    assert "NOT pretrained" in random_extractor.weights_source
    assert random_extractor.fingerprint["weights"] == "random"
    assert again.fingerprint == random_extractor.fingerprint
    image = _synthetic(64, 64, seed=1)
    np.testing.assert_array_equal(random_extractor.extract([image]), again.extract([image]))


def test_grid_dimensions_and_unit_rows(random_extractor) -> None:
    assert random_extractor.grid == (16, 16)
    assert random_extractor.embed_dim == 1152
    assert random_extractor.layers == (9, 10, 11)
    assert random_extractor.device_name == "cpu"
    out = random_extractor.extract([_synthetic(50, 80, seed=2), _synthetic(80, 50, seed=3)])
    assert out.shape == (2, 256, 1152) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, atol=1e-5)


def test_batches_and_progress_give_the_same_rows(random_extractor) -> None:
    imgs = [_synthetic(40 + 10 * i, 60, seed=10 + i) for i in range(3)]
    calls = []
    batched = random_extractor.extract(imgs, batch_size=2, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(2, 3), (3, 3)]
    single = np.concatenate([random_extractor.extract([img]) for img in imgs])
    np.testing.assert_allclose(batched, single, atol=1e-5, rtol=0)
    assert random_extractor.extract([]).shape == (0, 256, 1152)


def test_preprocess_letterboxes_with_black_rows() -> None:
    bgr = np.zeros((270, 300, 3), np.uint8)
    bgr[:] = (50, 100, 200)  # BGR
    chw, box = preprocess(bgr, 448)
    assert chw.shape == (3, 448, 448) and chw.dtype == np.float32
    assert box == Letterbox.fit(300, 270, 448)
    assert (box.x0, box.y0, box.width, box.height) == (0, 22, 448, 403)
    black = (-MEAN / STD).astype(np.float32)[:, None, None]
    colour = ((np.array([200, 100, 50]) / 255.0 - MEAN) / STD).astype(np.float32)[:, None, None]
    np.testing.assert_allclose(chw[:, :22], np.broadcast_to(black, (3, 22, 448)), atol=1e-6)
    np.testing.assert_allclose(chw[:, 425:], np.broadcast_to(black, (3, 23, 448)), atol=1e-6)
    np.testing.assert_allclose(chw[:, 22:425], np.broadcast_to(colour, (3, 403, 448)), atol=1e-6)


def test_concurrent_extracts_match_sequential(random_extractor) -> None:
    imgs = [_synthetic(60 + 7 * i, 90 - 5 * i, seed=20 + i) for i in range(4)]
    sequential = [random_extractor.extract([img]) for img in imgs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(lambda img: random_extractor.extract([img]), imgs * 2))
    for index, got in enumerate(concurrent):
        np.testing.assert_allclose(got, sequential[index % 4], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["missing.safetensors", "garbage.pth", "garbage.safetensors", "weights.bin"])
def test_unreadable_weights_name_the_setting(tmp_path, name) -> None:
    path = tmp_path / name
    if name != "missing.safetensors":
        path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ConfigError, match="BDI_WEIGHTS") as info:
        FeatureExtractor(input_size=112, weights=str(path), device="cpu")
    assert "random" in str(info.value) and "HF_HUB_OFFLINE=1" in str(info.value)


def test_weights_of_another_model_name_the_setting(tmp_path) -> None:
    path = tmp_path / "wrong.safetensors"
    save_file({"pos_embed": torch.zeros(1, 1370, 384), "head.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(ConfigError, match="BDI_WEIGHTS"):
        FeatureExtractor(input_size=112, weights=str(path), device="cpu")


def test_hub_weights_come_from_a_filled_cache_offline(tmp_path, monkeypatch, checkpoint_state, from_safetensors):
    """BDI_WEIGHTS=hub offline (what HF_HUB_OFFLINE=1 and HF_HOME set in huggingface_hub at import): the checkpoint
    is read from the cache in its real layout (refs/main names the snapshot holding model.safetensors); any
    request to the hub would raise."""
    repo = tmp_path / "hub" / f"models--timm--{MODEL_NAME}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    weights = {k: v.contiguous() for k, v in checkpoint_state.items()}
    save_file(weights, str(repo / "snapshots" / commit / "model.safetensors"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    extractor = FeatureExtractor(input_size=112, weights="hub", device="cpu")
    assert extractor.weights_source == "hub" and extractor.fingerprint["weights"] == "hub"
    assert extractor.fingerprint["weights_sha256"] == from_safetensors.fingerprint["weights_sha256"]  # same weights


def test_hub_weights_offline_with_an_empty_cache_name_the_setting(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match="BDI_WEIGHTS=hub") as info:
        FeatureExtractor(input_size=112, weights="hub", device="cpu")
    assert "not in the local Hugging Face cache" in str(info.value) and "HF_HUB_OFFLINE=1" in str(info.value)


@pytest.mark.parametrize("device", ["cuda:7", "tpu"] + ([] if torch.backends.mps.is_available() else ["mps"]))
def test_unavailable_device_names_the_setting(device) -> None:
    if device == "cuda:7" and torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    with pytest.raises(ConfigError, match="BDI_DEVICE"):
        FeatureExtractor(input_size=112, weights="random", device=device)


def test_bf16_autocast_stays_close_to_fp32(random_extractor) -> None:
    """BDI_PRECISION=bf16 (what the CPU can run fast): unit rows close to fp32's, recorded in the fingerprint."""
    bf16 = FeatureExtractor(input_size=SIZE, weights="random", device="cpu", precision="bf16")
    assert bf16.fingerprint == {**random_extractor.fingerprint, "precision": "bf16"}
    images = [_synthetic(60, 90, seed=20), _synthetic(90, 60, seed=21)]
    low, full = bf16.extract(images), random_extractor.extract(images)
    assert low.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(low, axis=-1), 1.0, atol=1e-5)
    assert not np.array_equal(low, full)  # autocast really ran
    assert (low * full).sum(-1).min() > 0.999  # cosine of each row to its fp32 row


def test_precision_is_checked_and_fp16_on_cpu_warns(caplog) -> None:
    with pytest.raises(ConfigError, match="BDI_PRECISION"):
        FeatureExtractor(input_size=SIZE, weights="random", device="cpu", precision="fp8")
    with caplog.at_level(logging.WARNING, logger="service.pipeline.features"):
        FeatureExtractor(input_size=SIZE, weights="random", device="cpu", precision="fp16")
    assert any("fp16 on the CPU" in record.message for record in caplog.records)
