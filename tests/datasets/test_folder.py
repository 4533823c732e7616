"""The plain folder layout: classes.json, pairing, mask decoding, the tf.data pipeline and joint augmentation."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kerasseg.data import ClassInfo, augment, folder_dataset, list_pairs, load_dataset, read_classes, write_classes
from kerasseg.preprocessing import NORMALIZATIONS, normalize_np

NAMES = ("road", "car", "tree")
COLORS = ((128, 64, 128), (0, 0, 142), (107, 142, 35))


def _write(root, split, name, image, mask, *, image_ext=".png", mask_mode=None, palette=None):
    os.makedirs(os.path.join(root, "images", split), exist_ok=True)
    os.makedirs(os.path.join(root, "masks", split), exist_ok=True)
    Image.fromarray(image).save(os.path.join(root, "images", split, name + image_ext))
    m = Image.fromarray(mask, mask_mode) if mask_mode else Image.fromarray(mask)
    if palette is not None:
        m.putpalette(palette)
    m.save(os.path.join(root, "masks", split, name + ".png"))


def _dataset(root, n=3, size=(12, 16), seed=0, colors=COLORS):
    rng = np.random.default_rng(seed)
    write_classes(root, ClassInfo(NAMES, colors))
    images, labels = [], []
    for i in range(n):
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        label = rng.integers(0, len(NAMES), size, dtype=np.uint8)
        label[0, :3] = 255
        _write(root, "val", f"img{i}", image, label)
        images.append(image)
        labels.append(label)
    return images, labels


def _batches(ds):
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(images), np.concatenate(labels)


# ---------------------------------------------------------------------------------------------------------------
# classes.json


def test_classes_round_trip(tmp_path):
    path = write_classes(tmp_path, ClassInfo(list(NAMES), [list(c) for c in COLORS], 255))
    info = read_classes(tmp_path)
    assert info == ClassInfo(NAMES, COLORS, 255) and info.num_classes == 3
    assert json.loads(open(path).read()) == {"names": list(NAMES), "colors": [list(c) for c in COLORS],
                                             "ignore_label": 255}
    # colors and ignore_label are optional.
    (tmp_path / "classes.json").write_text('{"names": ["a", "b"]}')
    assert read_classes(tmp_path) == ClassInfo(("a", "b"), None, 255)


@pytest.mark.parametrize("content, message", [
    ("{not json", "Expected valid JSON"),
    ('{"names": ["a", "b"], "colors": [[1, 2, 3]]}', "one \\[r, g, b\\] per class name"),
    ('{"names": ["a", "b"], "colors": [[1, 2, 3], [1, 2, 300]]}', "integers in 0..255"),
    ('{"names": ["a", "b"], "colors": [[1, 2, 3], [1, 2, 3]]}', "distinct class colours"),
    ('{"names": ["a", "b"], "ignore_label": 1}', "outside the class range.*ignore_label=1"),
    ('{"names": ["a", "a"]}', "distinct class names"),
    ('{"names": []}', "non-empty list"),
    ('{"classes": ["a"]}', "unknown keys"),
])
def test_bad_classes_json_names_the_file(tmp_path, content, message):
    (tmp_path / "classes.json").write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        read_classes(tmp_path)
    assert str(tmp_path / "classes.json") in str(info.value)


def test_missing_classes_json_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="classes.json"):
        read_classes(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# Listing


def test_list_pairs_sorted_and_ignores_other_files(tmp_path):
    _dataset(tmp_path, n=3)
    (tmp_path / "images" / "val" / "notes.txt").write_text("")
    (tmp_path / "images" / "val" / ".hidden.png").write_text("")
    pairs = list_pairs(tmp_path, "val")
    assert [os.path.basename(i) for i, _ in pairs] == ["img0.png", "img1.png", "img2.png"]
    assert all(m == str(tmp_path / "masks" / "val" / os.path.basename(i)) for i, m in pairs)


def test_missing_partner_files_are_named(tmp_path):
    _dataset(tmp_path, n=2)
    os.remove(tmp_path / "masks" / "val" / "img1.png")
    with pytest.raises(ValueError, match="img1.png") as info:
        list_pairs(tmp_path, "val")
    assert str(tmp_path / "images" / "val" / "img1.png") in str(info.value)
    os.remove(tmp_path / "images" / "val" / "img1.png")
    Image.fromarray(np.zeros((12, 16), np.uint8)).save(tmp_path / "masks" / "val" / "orphan.png")
    with pytest.raises(ValueError, match="for mask .*orphan.png"):
        list_pairs(tmp_path, "val")


def test_empty_or_missing_split_is_named(tmp_path):
    _dataset(tmp_path, n=1)
    (tmp_path / "images" / "test").mkdir()
    (tmp_path / "masks" / "test").mkdir()
    with pytest.raises(ValueError, match="empty split 'test'") as info:
        list_pairs(tmp_path, "test")
    assert str(tmp_path / "images" / "test") in str(info.value)
    with pytest.raises(ValueError, match="Expected a folder .*train"):
        list_pairs(tmp_path, "train")


def test_size_mismatch_is_named_when_listing(tmp_path):
    _dataset(tmp_path, n=2)
    Image.fromarray(np.zeros((10, 16), np.uint8)).save(tmp_path / "masks" / "val" / "img1.png")
    with pytest.raises(ValueError, match="same size.*img1.png.*12x16.*img1.png.*10x16"):
        list_pairs(tmp_path, "val")


def test_size_mismatch_is_named_when_decoding(tmp_path):
    _dataset(tmp_path, n=2)
    Image.fromarray(np.zeros((10, 16), np.uint8)).save(tmp_path / "masks" / "val" / "img1.png")
    ds = folder_dataset(tmp_path, "val", batch_size=1, check_sizes=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="same size.*img1.png"):
        list(ds)


def test_mask_values_outside_the_classes_are_named(tmp_path):
    _dataset(tmp_path, n=2)
    Image.fromarray(np.full((12, 16), 7, np.uint8)).save(tmp_path / "masks" / "val" / "img1.png")
    with pytest.raises(tf.errors.InvalidArgumentError, match="Received other values in.*img1.png"):
        list(folder_dataset(tmp_path, "val", batch_size=1))


def test_rgb_mask_without_colours_is_named(tmp_path):
    _dataset(tmp_path, n=1, colors=None)
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(tmp_path / "masks" / "val" / "img0.png")
    with pytest.raises(ValueError, match="lists no colors.*img0.png"):
        list_pairs(tmp_path, "val")


# ---------------------------------------------------------------------------------------------------------------
# Decoding


def test_round_trip_is_exact(tmp_path):
    images, labels = _dataset(tmp_path, n=3)
    ds = folder_dataset(tmp_path, "val", batch_size=2)
    assert ds.element_spec[0].shape.as_list() == [None, 12, 16, 3]
    got_images, got_labels = _batches(ds)
    assert got_images.dtype == np.float32 and got_labels.dtype == np.int32
    mean, std = NORMALIZATIONS["imagenet"]
    np.testing.assert_allclose(got_images, normalize_np(np.stack(images), mean, std), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(got_labels, np.stack(labels))

    mean, std = (10.0, 20.0, 30.0), (2.0, 4.0, 8.0)
    got_images, _ = _batches(folder_dataset(tmp_path, "val", batch_size=3, normalization=(mean, std)))
    np.testing.assert_allclose(got_images, normalize_np(np.stack(images), mean, std), rtol=0, atol=1e-5)


def test_jpeg_images(tmp_path):
    images, labels = _dataset(tmp_path, n=1)
    os.remove(tmp_path / "images" / "val" / "img0.png")
    Image.fromarray(images[0]).save(tmp_path / "images" / "val" / "img0.jpg", quality=95)
    got_images, got_labels = _batches(folder_dataset(tmp_path, "val", batch_size=1, normalization="unit"))
    decoded = np.asarray(Image.open(tmp_path / "images" / "val" / "img0.jpg"), np.float32)
    assert np.abs(got_images[0] * 255 - decoded).mean() < 2.0
    np.testing.assert_array_equal(got_labels[0], labels[0])


def test_index_palette_and_colour_masks(tmp_path):
    write_classes(tmp_path, ClassInfo(NAMES, COLORS))
    rng = np.random.default_rng(1)
    label = rng.integers(0, 3, (9, 14), dtype=np.uint8)
    label[2, 2:6] = 255
    image = rng.integers(0, 256, (9, 14, 3), dtype=np.uint8)
    # A palette whose colours are unrelated to the classes: the loader must return the indices.
    scrambled = [int(v) for v in rng.integers(0, 256, 768)]
    _write(tmp_path, "val", "a_index", image, label, mask_mode="L")
    _write(tmp_path, "val", "b_palette8", image, label, mask_mode="P", palette=scrambled)
    colour = np.zeros((9, 14, 3), np.uint8)
    for c, rgb in enumerate(COLORS):
        colour[label == c] = rgb
    colour[label == 255] = (1, 2, 3)  # not a class colour
    _write(tmp_path, "val", "d_rgb", image, colour)
    _write(tmp_path, "val", "e_rgba", image, np.dstack([colour, np.full((9, 14), 200, np.uint8)]))
    assert Image.open(tmp_path / "masks" / "val" / "b_palette8.png").mode == "P"

    # Mixed mask kinds in one split (index, palette, RGB, RGBA), sorted by name.
    _, labels = _batches(folder_dataset(tmp_path, "val", batch_size=4))
    for i in range(4):
        np.testing.assert_array_equal(labels[i], label, err_msg=str(i))
    # A single kind takes the direct path (no switch between decoders).
    os.remove(tmp_path / "masks" / "val" / "a_index.png")
    os.remove(tmp_path / "images" / "val" / "a_index.png")
    for name in ("d_rgb", "e_rgba"):
        os.remove(tmp_path / "masks" / "val" / f"{name}.png")
        os.remove(tmp_path / "images" / "val" / f"{name}.png")
    _, labels = _batches(folder_dataset(tmp_path, "val", batch_size=1))
    np.testing.assert_array_equal(labels[0], label)


def test_four_bit_palette_mask_indices(tmp_path):
    write_classes(tmp_path, ClassInfo(NAMES, COLORS, ignore_label=15))
    label = np.array([[0, 1, 2, 15], [2, 1, 0, 15]], np.uint8)
    _write(tmp_path, "val", "m", np.zeros((2, 4, 3), np.uint8), label, mask_mode="P", palette=[9] * 48)
    with open(tmp_path / "masks" / "val" / "m.png", "rb") as f:
        assert f.read(29)[24] == 4  # IHDR bit depth: the low-bit path really runs
    _, labels = _batches(folder_dataset(tmp_path, "val", batch_size=1))
    np.testing.assert_array_equal(labels[0], label)


# ---------------------------------------------------------------------------------------------------------------
# Pipeline options


def test_variable_sizes_need_a_crop(tmp_path):
    write_classes(tmp_path, ClassInfo(NAMES, COLORS))
    rng = np.random.default_rng(2)
    big = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8), rng.integers(0, 3, (10, 12), dtype=np.uint8)
    small = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8), rng.integers(0, 3, (5, 6), dtype=np.uint8)
    _write(tmp_path, "val", "big", *big)
    _write(tmp_path, "val", "small", *small)
    with pytest.raises(ValueError, match="share one size.*batch_size=2"):
        folder_dataset(tmp_path, "val", batch_size=2)
    images, labels = _batches(folder_dataset(tmp_path, "val", batch_size=2, crop_size=(6, 8)))
    mean, std = NORMALIZATIONS["imagenet"]
    # Centre crop of the big one.
    np.testing.assert_array_equal(labels[0], big[1][2:8, 2:10])
    np.testing.assert_allclose(images[0], normalize_np(big[0][2:8, 2:10], mean, std), atol=1e-5)
    # The small one is padded at the bottom/right: ignore label, and the mean (zero once normalised).
    np.testing.assert_array_equal(labels[1][:5, :6], small[1])
    assert np.all(labels[1][5:] == 255) and np.all(labels[1][:, 6:] == 255)
    np.testing.assert_allclose(images[1][:5, :6], normalize_np(small[0], mean, std), atol=1e-5)
    assert np.all(images[1][5:] == 0) and np.all(images[1][:, 6:] == 0)


def test_order_shuffle_seed_and_cache(tmp_path):
    write_classes(tmp_path, ClassInfo(NAMES, COLORS))
    for i in range(6):  # each image is constant with value i: the batch order is readable
        _write(tmp_path, "val", f"img{i}", np.full((4, 4, 3), i, np.uint8), np.zeros((4, 4), np.uint8))

    def order(ds):
        return [int(round(v)) for v in _batches(ds)[0][:, 0, 0, 0]]

    unit = {"normalization": ((0, 0, 0), (1, 1, 1)), "batch_size": 2}
    assert order(folder_dataset(tmp_path, "val", **unit)) == list(range(6))
    for cache in (False, True):
        a = folder_dataset(tmp_path, "val", shuffle=True, seed=3, cache=cache, **unit)
        b = folder_dataset(tmp_path, "val", shuffle=True, seed=3, cache=cache, **unit)
        first, second = order(a), order(a)
        assert sorted(first) == list(range(6))
        assert first == order(b)
        assert first != second  # a new order every epoch
    runs = {tuple(order(folder_dataset(tmp_path, "val", shuffle=True, seed=s, **unit))) for s in range(4)}
    assert len(runs) > 1


def test_augment_reproducible_and_drop_remainder(synthetic_root):
    def labels(seed):
        ds = folder_dataset(synthetic_root, "train", batch_size=3, crop_size=(32, 48), augment=True, seed=seed,
                            scale_range=(0.5, 1.5))
        return _batches(ds)[1]

    a, b, c = labels(1), labels(1), labels(2)
    assert a.shape == (6, 32, 48)  # 8 scenes, batches of 3, the remainder dropped
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert set(np.unique(a)) <= set(range(8)) | {255}


def test_argument_validation(tmp_path):
    _dataset(tmp_path, n=1)
    with pytest.raises(ValueError, match="Received: batch_size=0"):
        folder_dataset(tmp_path, "val", batch_size=0)
    with pytest.raises(ValueError, match="Received: crop_size=\\(0, 4\\)"):
        folder_dataset(tmp_path, "val", batch_size=1, crop_size=(0, 4))
    with pytest.raises(ValueError, match="Received: normalization='imagenette'"):
        folder_dataset(tmp_path, "val", batch_size=1, normalization="imagenette")
    with pytest.raises(ValueError, match="std > 0"):
        folder_dataset(tmp_path, "val", batch_size=1, normalization=((0, 0, 0), (1, 0, 1)))
    with pytest.raises(ValueError, match="only together with augment=True"):
        folder_dataset(tmp_path, "val", batch_size=1, scale_range=(0.5, 2.0))
    with pytest.raises(ValueError, match="Expected crop_size with scale_range"):
        folder_dataset(tmp_path, "val", batch_size=2, augment=True, scale_range=(0.5, 2.0))
    with pytest.raises(ValueError, match="Received: scale_range=\\(2.0, 0.5\\)"):
        folder_dataset(tmp_path, "val", batch_size=1, augment=True, crop_size=4, scale_range=(2.0, 0.5))
    with pytest.raises(ValueError, match="Received: split='../val'"):
        list_pairs(tmp_path, "../val")


def test_load_dataset_dispatch(tmp_path, synthetic_root):
    _dataset(tmp_path, n=2)
    images, labels = _batches(load_dataset("folder", tmp_path, "val", batch_size=2))
    assert images.shape == (2, 12, 16, 3)
    ds = load_dataset("synthetic", synthetic_root, "train", batch_size=4, crop_size=(32, 64), augment=True, seed=0)
    assert ds.element_spec[1].shape.as_list() == [4, 32, 64]
    # Generated on first use, with generation arguments.
    root = tmp_path / "generated"
    ds = load_dataset("synthetic", root, "val", batch_size=1, num_train=1, num_val=2, height=32, width=48,
                      dataset_seed=4)
    assert _batches(ds)[1].shape == (2, 32, 48)
    with pytest.raises(ValueError, match="Expected one of \\[.*'folder', 'synthetic'\\]. Received: format='coco'"):
        load_dataset("coco", tmp_path, "val", batch_size=1)


# ---------------------------------------------------------------------------------------------------------------
# Joint augmentation


def _coordinate_pair(h=20, w=28):
    """An image whose pixels encode their own position, and the label computed from that position."""
    y, x = np.mgrid[:h, :w]
    image = np.stack([y, x, np.zeros_like(x)], -1).astype(np.float32)
    label = ((3 * y + 7 * x) % 5).astype(np.int32)
    return image, label


@pytest.mark.parametrize("seed", range(4))
def test_flip_and_crop_keep_image_and_label_aligned(seed):
    image, label = _coordinate_pair()
    out_img, out_lab = augment.augment_pair(tf.constant(image), tf.constant(label), tf.constant([seed, 11]),
                                            crop_size=(24, 16), image_value=-1.0, ignore_label=255)
    out_img, out_lab = out_img.numpy(), out_lab.numpy()
    assert out_img.shape == (24, 16, 3) and out_lab.shape == (24, 16)
    inside = out_lab != 255
    assert inside.sum() == 20 * 16  # 4 padded rows (20 -> 24), width cropped 28 -> 16
    y, x = out_img[..., 0][inside], out_img[..., 1][inside]
    np.testing.assert_array_equal(out_lab[inside], (3 * y + 7 * x) % 5)
    assert np.all(out_img[~inside] == -1.0)


def test_flip_really_flips_sometimes():
    image, label = _coordinate_pair()
    flipped = 0
    for seed in range(8):
        out_img, _ = augment.augment_pair(tf.constant(image), tf.constant(label), tf.constant([seed, 0]))
        flipped += int(out_img.numpy()[0, 0, 1] == 27)
    assert 0 < flipped < 8


def test_random_scale_keeps_alignment():
    # Large constant blocks; the image value encodes the block's label.
    label = np.kron(np.arange(12).reshape(3, 4) % 6, np.ones((16, 16))).astype(np.int32)
    image = np.repeat((label * 30.0)[..., None], 3, axis=-1).astype(np.float32)
    checked = 0
    for seed in range(4):
        img, lab = augment.augment_pair(tf.constant(image), tf.constant(label), tf.constant([seed, 5]),
                                        crop_size=(40, 56), scale_range=(0.5, 2.0), ignore_label=255)
        img, lab = img.numpy(), lab.numpy()
        assert set(np.unique(lab)) <= set(range(6)) | {255}  # nearest neighbour invents no label
        # Away from block borders the (bilinear) image must show exactly its (nearest) label.
        padded = np.pad(lab, 2, mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, (5, 5))
        flat = (windows.min(axis=(-1, -2)) == windows.max(axis=(-1, -2))) & (lab != 255)
        np.testing.assert_allclose(img[..., 0][flat], lab[flat] * 30.0, atol=1e-3)
        checked += flat.sum()
    assert checked > 0.5 * 4 * 40 * 56


def test_pad_uses_value_per_channel_and_ignore_label():
    image = tf.ones((2, 3, 3))
    label = tf.zeros((2, 3), tf.uint8)
    img, lab = augment.pad_to_size(image, label, (4, 5), image_value=tf.constant([7.0, 8.0, 9.0]), ignore_label=200)
    img, lab = img.numpy(), lab.numpy()
    assert img.shape == (4, 5, 3) and lab.dtype == np.uint8
    np.testing.assert_array_equal(img[:2, :3], 1.0)
    np.testing.assert_array_equal(img[3, 4], [7.0, 8.0, 9.0])
    assert np.all(lab[2:] == 200) and np.all(lab[:, 3:] == 200) and np.all(lab[:2, :3] == 0)
