"""Ground-truth box loaders, on small files written in each dataset's real format and on the shared real data."""

import sys
import types

import numpy as np
import pytest
from PIL import Image

from lib.data.boxes import load_boxes, load_coco, load_shapes, load_tiny_imagenet_val, load_voc, load_yolo

# VOC2007's Annotations/000001.xml (both objects truncated), verbatim but for the flickr details.
VOC07_000001 = """<annotation>
	<folder>VOC2007</folder>
	<filename>000001.jpg</filename>
	<source>
		<database>The VOC2007 Database</database>
		<annotation>PASCAL VOC2007</annotation>
		<image>flickr</image>
	</source>
	<size>
		<width>353</width>
		<height>500</height>
		<depth>3</depth>
	</size>
	<segmented>0</segmented>
	<object>
		<name>dog</name>
		<pose>Left</pose>
		<truncated>1</truncated>
		<difficult>0</difficult>
		<bndbox>
			<xmin>48</xmin>
			<ymin>240</ymin>
			<xmax>195</xmax>
			<ymax>371</ymax>
		</bndbox>
	</object>
	<object>
		<name>person</name>
		<pose>Left</pose>
		<truncated>1</truncated>
		<difficult>0</difficult>
		<bndbox>
			<xmin>8</xmin>
			<ymin>12</ymin>
			<xmax>352</xmax>
			<ymax>498</ymax>
		</bndbox>
	</object>
</annotation>
"""

# VOC2012 style: person layout parts (their own <bndbox>, not objects), float coordinates, a difficult object.
VOC12_SAMPLE = """<annotation>
	<filename>2008_000008.jpg</filename>
	<folder>VOC2012</folder>
	<object>
		<name>horse</name>
		<bndbox>
			<xmax>471</xmax>
			<xmin>53</xmin>
			<ymax>420</ymax>
			<ymin>87</ymin>
		</bndbox>
		<difficult>0</difficult>
		<occluded>1</occluded>
		<pose>Left</pose>
		<truncated>0</truncated>
	</object>
	<object>
		<name>person</name>
		<bndbox>
			<xmax>289.5</xmax>
			<xmin>158</xmin>
			<ymax>167</ymax>
			<ymin>44</ymin>
		</bndbox>
		<difficult>1</difficult>
		<occluded>0</occluded>
		<part>
			<name>head</name>
			<bndbox>
				<xmax>197</xmax>
				<xmin>169</xmin>
				<ymax>80</ymax>
				<ymin>44</ymin>
			</bndbox>
		</part>
		<pose>Unspecified</pose>
		<truncated>0</truncated>
	</object>
	<segmented>0</segmented>
	<size>
		<depth>3</depth>
		<height>442</height>
		<width>500</width>
	</size>
</annotation>
"""


def write_image(path, width, height, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (width, height), 128).save(path)


def write_voc(root, year, entries, split="trainval"):
    """A VOCdevkit/VOC<year> tree: Annotations, ImageSets/Main/<split>.txt, JPEGImages."""
    folder = root / "VOCdevkit" / f"VOC{year}"
    (folder / "Annotations").mkdir(parents=True)
    (folder / "ImageSets" / "Main").mkdir(parents=True)
    for image_id, xml, (width, height) in entries:
        (folder / "Annotations" / f"{image_id}.xml").write_text(xml)
        write_image(folder / "JPEGImages" / f"{image_id}.jpg", width, height)
    (folder / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{e[0]}\n" for e in entries))
    return folder


def test_voc07_boxes_are_zero_based_with_exclusive_ends(tmp_path):
    write_voc(tmp_path, "2007", [("000001", VOC07_000001, (353, 500))])
    data = load_voc(tmp_path, "2007", "trainval")
    assert data.ids == ["000001"] and data.classes == [["dog", "person"]]
    np.testing.assert_array_equal(data.boxes[0], [[47, 239, 195, 371], [7, 11, 352, 498]])
    assert data.image(0).shape == (500, 353, 3) and data.size(0) == (500, 353)
    # LOST's no-hard setting: both objects are truncated, so the image goes
    assert len(load_voc(tmp_path, "2007", "trainval", remove_hards=True)) == 0


def test_voc12_ignores_parts_reads_floats_and_drops_hard_objects(tmp_path):
    write_voc(tmp_path, "2012", [("2008_000008", VOC12_SAMPLE, (500, 442))], split="val")
    for root in (tmp_path, tmp_path / "VOCdevkit", tmp_path / "VOCdevkit" / "VOC2012"):
        data = load_boxes("voc12", root, split="val")
        np.testing.assert_array_equal(data.boxes[0], [[52, 86, 471, 420], [157, 43, 289.5, 167]])
    easy = load_voc(tmp_path, "2012", "val", remove_hards=True)
    assert easy.classes == [["horse"]] and easy.boxes[0].shape == (1, 4)


def test_voc_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_voc(tmp_path, "2007")
    write_voc(tmp_path, "2007", [("000001", VOC07_000001, (353, 500))])
    with pytest.raises(FileNotFoundError, match="no split 'test'"):
        load_voc(tmp_path, "2007", "test")
    with pytest.raises(ValueError, match="split must be"):
        load_voc(tmp_path, "2007", "minival")
    with pytest.raises(ValueError, match="2007 or 2012"):
        load_voc(tmp_path, "2010")


def test_voc_download_calls_the_downloader_lazily(tmp_path, monkeypatch):
    calls = []

    def download_voc(root, year):
        calls.append((root, year))
        return write_voc(root, year, [("000001", VOC07_000001, (353, 500))])

    monkeypatch.setitem(sys.modules, "lib.data.download", types.SimpleNamespace(download_voc=download_voc))
    data = load_voc(tmp_path, 2007, "trainval", download=True)
    assert calls == [(tmp_path, "2007")] and len(data) == 1


def test_yolo_boxes_are_denormalised_to_pixels(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    write_image(images / "a.jpg", 100, 50)
    write_image(images / "b.jpg", 40, 40, mode="L")  # grey-scale, and no label file
    labels.mkdir()
    (labels / "a.txt").write_text("3 0.5 0.5 0.2 0.4\n0 0.1 0.9 0.2 0.2\n")
    data = load_yolo(images, labels, names=["person", "b", "c", "dog"])
    assert data.ids == ["a", "b"] and data.classes[0] == ["dog", "person"]
    np.testing.assert_allclose(data.boxes[0], [[40, 15, 60, 35], [0, 40, 20, 50]], atol=1e-5)
    assert data.boxes[1].shape == (0, 4) and data.image(1).shape == (40, 40, 3)
    assert data.with_boxes().ids == ["a"]
    (labels / "a.txt").write_text("3 0.1 0.1 0.2 0.1 0.3 0.3\n")  # a segmentation polygon
    with pytest.raises(ValueError, match="5 columns"):
        load_yolo(images, labels)


def test_tiny_imagenet_boxes_are_inclusive_in_the_file(tmp_path):
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn03444034\t0\t32\t44\t62\n"
                                                          "val_1.JPEG\tn04067472\t0\t0\t63\t63\n")
    write_image(tmp_path / "val" / "images" / "val_0.JPEG", 64, 64)
    data = load_tiny_imagenet_val(tmp_path)
    assert data.ids == ["val_0", "val_1"] and data.classes == [["n03444034"], ["n04067472"]]
    np.testing.assert_array_equal(data.boxes[0], [[0, 32, 45, 63]])
    np.testing.assert_array_equal(data.boxes[1], [[0, 0, 64, 64]])  # the whole 64-px image


def test_shapes_boxes_match_the_embedded_dataset(tiny_shapes):
    from lib.data import shapes

    arrays = shapes.load_split(tiny_shapes, "test")
    data = load_shapes(tiny_shapes, "test")
    assert len(data) == len(arrays["labels"])
    np.testing.assert_array_equal(np.concatenate(data.boxes), arrays["boxes"])
    np.testing.assert_array_equal(data.image(3), arrays["images"][3])
    small = data.sample(5, seed=1)
    assert len(small) == 5 and small.ids == sorted(small.ids, key=data.ids.index)
    assert data.sample(None) is data


def test_unknown_dataset_is_refused():
    with pytest.raises(ValueError, match="coco"):
        load_boxes("imagenet", ".")


# ----------------------------------------------------------------------------- the shared real data
def test_real_coco128(shared_data):
    data = load_coco(shared_data / "coco128")
    assert len(data) == 128
    first = data.ids.index("000000000139")
    lines = (shared_data / "coco128/object_detection/labels/val2017/000000000139.txt").read_text().split("\n")
    assert len(data.boxes[first]) == len([line for line in lines if line.strip()])
    for index in range(len(data)):
        height, width = data.size(index)
        b = data.boxes[index]
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert (b >= -0.5).all() and (b[:, 2] <= width + 0.5).all() and (b[:, 3] <= height + 0.5).all()
    assert data.image(first).shape[2] == 3 and "tv" in data.classes[first]


def test_real_tiny_imagenet_val(shared_data):
    data = load_tiny_imagenet_val(shared_data / "tiny-imagenet-200")
    assert len(data) == 10_000
    every = np.concatenate(data.boxes)
    assert every.min() >= 0 and every.max() <= 64
    assert (every[:, 2] > every[:, 0]).all() and (every[:, 3] > every[:, 1]).all()
    assert data.image(0).shape == (64, 64, 3)
    np.testing.assert_array_equal(data.boxes[0], [[0, 32, 45, 63]])  # val_0.JPEG  0 32 44 62

