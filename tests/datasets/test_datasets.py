"""Dataset formats: pairing, splits and label mapping against the published tables, on tiny generated fixtures."""

import numpy as np
import pytest

from kerasseg.data import ade20k, camvid, cityscapes, dataset_classes, load_dataset, resolve, voc
from tests import dataset_fixtures as fx

# The official Cityscapes labelId -> trainId table (cityscapesscripts/helpers/labels.py); every other id is 255.
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                        26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def _labels(ds):
    return np.concatenate([y.numpy() for _, y in ds])


def _names(spec):
    return [p[0].rsplit("/", 1)[-1] for p in spec.pairs]


def test_cityscapes_pairs_and_label_ids(tmp_path):
    root = fx.cityscapes(tmp_path)
    spec = resolve("cityscapes", root, "train")
    assert _names(spec) == ["aachen_000000_000000_leftImg8bit.png", "aachen_000000_000001_leftImg8bit.png",
                            "bochum_000000_000000_leftImg8bit.png"]
    assert all(label.endswith("_gtFine_labelIds.png") and "/gtFine/train/" in label for _, label in spec.pairs)
    assert len(resolve("cityscapes", root, "val").pairs) == 1
    labels = _labels(load_dataset("cityscapes", root, "train", batch_size=1))
    ids = fx.ramp(np.arange(34))
    expected = np.vectorize(lambda i: CITYSCAPES_TRAIN_IDS.get(int(i), 255))(ids)
    assert labels.shape == (3, fx.H, fx.W) and labels.dtype == np.int32
    np.testing.assert_array_equal(labels[0], expected)


def test_cityscapes_train_ids_are_preferred_and_reverse_mapping(tmp_path):
    root = fx.cityscapes(tmp_path, train_ids=True)
    spec = resolve("cityscapes", root, "train")
    assert all(label.endswith("_gtFine_labelTrainIds.png") for _, label in spec.pairs)
    assert resolve("cityscapes", root, "train", train_ids=False).pairs[0][1].endswith("_labelIds.png")
    a = _labels(load_dataset("cityscapes", root, "val", batch_size=1))
    b = _labels(load_dataset("cityscapes", root, "val", batch_size=1, train_ids=False))
    np.testing.assert_array_equal(a, b)
    # Reverse mapping for benchmark submissions.
    np.testing.assert_array_equal(cityscapes.to_label_ids(np.arange(19)), sorted(CITYSCAPES_TRAIN_IDS))
    with pytest.raises(ValueError, match="Expected train ids in 0..18. Received: values \\[255\\]"):
        cityscapes.to_label_ids(np.array([0, 255]))
    assert cityscapes.CLASS_NAMES[:3] == ("road", "sidewalk", "building") and cityscapes.CLASS_NAMES[-1] == "bicycle"
    assert cityscapes.PALETTE[0] == (128, 64, 128) and cityscapes.PALETTE[13] == (0, 0, 142)


def test_cityscapes_missing_label_is_named(tmp_path):
    root = fx.cityscapes(tmp_path)
    (tmp_path / "gtFine" / "train" / "bochum" / "bochum_000000_000000_gtFine_labelIds.png").unlink()
    with pytest.raises(ValueError, match="Expected a label .*bochum_000000_000000_gtFine_labelIds.png.* for image "
                                         ".*bochum_000000_000000_leftImg8bit.png"):
        resolve("cityscapes", root, "train")
    with pytest.raises(ValueError, match="Expected a folder .*leftImg8bit/test"):
        resolve("cityscapes", root, "test")


def test_voc_palette_indices_splits_and_border(tmp_path):
    root = fx.voc(tmp_path)
    assert [p[0].rsplit("/", 1)[-1] for p in resolve("voc", root, "train").pairs] == [
        "2007_000000.jpg", "2007_000001.jpg", "2007_000002.jpg"]
    assert len(resolve("voc", root, "val").pairs) == 2 and len(resolve("voc", root, "trainval").pairs) == 5
    labels = _labels(load_dataset("voc", root, "val", batch_size=2))
    expected = fx.ramp(np.arange(21))
    expected[0, :] = 255
    # Read as palette indices: RGB decoding would give colours, not 0..20.
    np.testing.assert_array_equal(labels[1], expected)
    assert voc.CLASSES.num_classes == 21 and voc.PALETTE[15] == (192, 128, 128)  # person


def test_voc_augmented_set_and_missing_list(tmp_path):
    root = fx.voc(tmp_path, augmented=True)
    spec = resolve("voc", root, "train", augmented=True)
    assert [p[1].rsplit("/", 2)[-2:] for p in spec.pairs][0] == ["SegmentationClassAug", "2007_000001.png"]
    labels = _labels(load_dataset("voc", root, "train", batch_size=1, augmented=True))
    assert [int(v) for v in labels[:, 0, 0]] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="Expected a split list file .*Segmentation/test.txt"):
        resolve("voc", root, "test")
    (tmp_path / "JPEGImages" / "2007_000004.jpg").unlink()
    with pytest.raises(ValueError, match="Expected an image .*2007_000004.jpg.* listed in .*val.txt"):
        resolve("voc", root, "val")


def test_ade20k_zero_ignored_and_shifted(tmp_path):
    root = fx.ade20k(tmp_path)
    assert len(resolve("ade20k", root, "train").pairs) == 2
    assert resolve("ade20k", tmp_path / "ADEChallengeData2016", "validation").pairs == resolve(
        "ade20k", root, "val").pairs
    labels = _labels(load_dataset("ade20k", root, "train", batch_size=2))
    stored = fx.ramp(np.arange(151), 13, 12).astype(np.int32)
    np.testing.assert_array_equal(labels[0], np.where(stored == 0, 255, stored - 1))
    assert ade20k.CLASSES.num_classes == 150 and ade20k.CLASS_NAMES[0] == "wall" and ade20k.CLASS_NAMES[-1] == "flag"
    with pytest.raises(ValueError, match="Received: split='test'"):
        resolve("ade20k", root, "test")


def test_camvid_lists_void_and_class_table(tmp_path):
    root = fx.camvid(tmp_path)
    spec = resolve("camvid", root, "train")
    # The list order (reversed names), with the foreign path prefix replaced by root.
    assert _names(spec) == ["0001TP_train002.png", "0001TP_train001.png", "0001TP_train000.png"]
    assert spec.pairs[0][0] == str(tmp_path / "train" / "0001TP_train002.png")
    labels = _labels(load_dataset("camvid", root, "val", batch_size=2))
    stored = fx.ramp(np.arange(12)).astype(np.int32)
    np.testing.assert_array_equal(labels[0], np.where(stored == 11, 255, stored))
    assert camvid.CLASS_NAMES == ("sky", "building", "pole", "road", "sidewalk", "tree", "sign", "fence", "car",
                                  "pedestrian", "bicyclist")
    assert camvid.PALETTE[3] == (128, 64, 128) and camvid.PALETTE[0] == (128, 128, 128)


def test_camvid_without_lists_pairs_by_name(tmp_path):
    root = fx.camvid(tmp_path, with_lists=False)
    assert _names(resolve("camvid", root, "train")) == ["0001TP_train000.png", "0001TP_train001.png",
                                                         "0001TP_train002.png"]
    (tmp_path / "val" / "0001TP_val001.png").unlink()
    with pytest.raises(ValueError, match="Expected an image .*val/0001TP_val001.png.* for label"):
        resolve("camvid", root, "val")


@pytest.mark.parametrize("rgb_masks", [False, True])
def test_folder_index_and_colour_masks(tmp_path, rgb_masks):
    root = fx.folder(tmp_path, rgb_masks=rgb_masks)
    labels = _labels(load_dataset("folder", root, "val", batch_size=3))
    np.testing.assert_array_equal(labels[2], fx.ramp([0, 1, 2, 255]))
    assert dataset_classes("folder", root).names == ("a", "b", "c")


def test_unknown_format_and_option(tmp_path):
    with pytest.raises(ValueError, match="Expected one of \\['cityscapes', 'voc', 'ade20k', 'camvid', 'folder', "
                                         "'synthetic'\\]. Received: format='coco'"):
        load_dataset("coco", tmp_path, "train", batch_size=1)
    fx.camvid(tmp_path)
    with pytest.raises(ValueError, match="Unknown option for format 'camvid'.*Received: \\['train_ids'\\]"):
        resolve("camvid", tmp_path, "train", train_ids=True)
    with pytest.raises(ValueError, match="Received: root=.*missing.*not a folder"):
        resolve("camvid", tmp_path / "missing", "train")


def test_empty_split_is_named(tmp_path):
    fx.camvid(tmp_path, with_lists=False)
    (tmp_path / "test").mkdir()
    (tmp_path / "testannot").mkdir()
    with pytest.raises(ValueError, match="Received: an empty split 'test'"):
        resolve("camvid", tmp_path, "test")
