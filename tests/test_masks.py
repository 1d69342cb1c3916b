"""Ground-truth masks: VOC's real palette format, the coco128 layout, the embedded data, and the VOC download."""

import hashlib
import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from helpers import voc_palette
from lib.data import download, masks


def write_voc(root, ids=("2007_000001", "2007_000002"), size=(80, 60)):
    """A tiny VOC2012 in the official layout: a cat (8, red 64) and a bus (6, red 0) with void outlines."""
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    (voc / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids) + "\n")
    w, h = size
    for k, name in enumerate(ids):
        ids_map = np.zeros((h, w), np.uint8)
        ids_map[20:40, 30:60] = 255  # void outline around the object
        ids_map[22:38, 32:58] = (8, 6)[k % 2]
        label = Image.fromarray(ids_map, mode="P")
        label.putpalette(voc_palette())
        label.save(voc / "SegmentationClass" / f"{name}.png")
        image = np.full((h, w, 3), 40, np.uint8)
        image[ids_map > 0] = (250, 20, 20)
        Image.fromarray(image).save(voc / "JPEGImages" / f"{name}.jpg", quality=95)
    return voc


def test_voc_foreground_is_every_class_but_background_and_void():
    ids = np.array([[0, 8, 15], [255, 6, 20]])
    assert masks.voc_foreground(ids).tolist() == [[False, True, True], [False, True, True]]
    with pytest.raises(ValueError, match="indices"):
        masks.voc_foreground(np.zeros((2, 2, 3)))


def test_voc_loader_reads_class_ids_not_colours(tmp_path):
    voc = write_voc(tmp_path)
    # The red-channel reading of Study A's code loses these classes: cat's palette red is 64, bus's is 0.
    rgb = np.array(Image.open(voc / "SegmentationClass" / "2007_000002.png").convert("RGB"))
    assert rgb[30, 40, 0] == 0
    data = masks.load_voc_segmentation(voc, "val", image_size=30)
    assert data["images"].shape == (2, 30, 30, 3) and data["images"].dtype == np.uint8
    assert data["masks"].shape == (2, 30, 30) and data["masks"].dtype == bool
    assert list(data["ids"]) == ["2007_000001", "2007_000002"]
    # Shorter side 60 -> 30 (scale 1/2), width 80 -> 40, centre crop drops 5 columns each side: the
    # object (rows 22:38, cols 32:58) lands at rows 11:19, cols 11:24.
    expected = np.zeros((30, 30), bool)
    expected[11:19, 11:24] = True
    assert (data["masks"][0] == expected).mean() > 0.97
    # The image went through the same geometry: the red object sits under the mask.
    assert data["images"][0][expected][:, 0].mean() > 200 and data["images"][0][~expected][:, 0].mean() < 120


def test_voc_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="download_voc"):
        masks.load_voc_segmentation(tmp_path)
    voc = write_voc(tmp_path)
    Image.new("RGB", (80, 60)).save(voc / "SegmentationClass" / "2007_000001.png")
    with pytest.raises(ValueError, match="palette or single-channel"):
        masks.load_voc_segmentation(voc)


def test_coco_foreground_is_the_union_of_things():
    ids = np.array([[0, 1, 90], [92, 193, 23]])
    assert masks.coco_foreground(ids).tolist() == [[False, True, True], [False, False, True]]


def test_coco128_semantic_masks(shared_data):
    root = shared_data / "coco128"
    data = masks.load_coco_semantic(root, image_size=64, limit=3)
    assert data["images"].shape == (3, 64, 64, 3) and data["masks"].shape == (3, 64, 64)
    first = data["ids"][0]
    ids_map = np.array(Image.open(root / "semantic_segmentation/masks/val2017" / f"{first}.png"))
    full = masks.coco_foreground(ids_map)
    cropped = np.array(masks.square_crop(Image.fromarray(full.astype(np.uint8) * 255), 64, Image.NEAREST)) > 127
    assert np.array_equal(data["masks"][0], cropped)
    assert all(m.any() for m in data["masks"])


def test_shapes_masks_and_dispatch(tiny_shapes):
    data = masks.load_ground_truth("shapes", tiny_shapes, limit=5)
    assert data["images"].shape[0] == 5 and data["masks"].dtype == bool and len(data["labels"]) == 5
    with pytest.raises(ValueError, match="unknown ground-truth dataset"):
        masks.load_ground_truth("imagenet", tiny_shapes)


def make_tar(path, files):
    with tarfile.open(path, "w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_download_voc_fetches_once_then_uses_the_local_copy(tmp_path, monkeypatch):
    source = tmp_path / "mirror" / "VOCtrainval_11-May-2012.tar"
    source.parent.mkdir()
    md5 = make_tar(source, {"VOCdevkit/VOC2012/ImageSets/Main/trainval.txt": "2007_000001\n",
                            "VOCdevkit/VOC2012/JPEGImages/2007_000001.jpg": "jpeg"})
    monkeypatch.setitem(download.VOC_ARCHIVES, "2012",
                        (source.as_uri(), md5, "VOCdevkit/VOC2012", "ImageSets/Main/trainval.txt"))
    root = tmp_path / "data"
    voc = download.download_voc(root, "2012")
    assert voc == root / "VOCdevkit" / "VOC2012"
    assert (voc / "JPEGImages" / "2007_000001.jpg").read_text() == "jpeg"
    assert not any(p.name.startswith(".extract") for p in root.iterdir())
    # Present now: no network (an unreachable URL would fail).
    monkeypatch.setitem(download.VOC_ARCHIVES, "2012",
                        ("http://invalid.invalid/x.tar", md5, "VOCdevkit/VOC2012", "ImageSets/Main/trainval.txt"))
    assert download.download_voc(root, "2012") == voc


def test_download_voc_rejects_a_corrupt_archive_and_bad_years(tmp_path, monkeypatch):
    source = tmp_path / "bad.tar"
    make_tar(source, {"VOCdevkit/VOC2012/ImageSets/Main/trainval.txt": "x"})
    monkeypatch.setitem(download.VOC_ARCHIVES, "2012",
                        (source.as_uri(), "0" * 32, "VOCdevkit/VOC2012", "ImageSets/Main/trainval.txt"))
    with pytest.raises(OSError, match="md5"):
        download.download_voc(tmp_path / "data", "2012")
    assert not (tmp_path / "data" / "VOCdevkit").exists()
    with pytest.raises(ValueError, match="unknown VOC year"):
        download.download_voc(tmp_path, "2013")
