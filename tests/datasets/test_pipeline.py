"""The shared tf.data pipeline: label lookup and checks, bad files, augmentation, determinism, normalisation."""

import numpy as np
import pytest
import tensorflow as tf

from kerasseg.data import augment, load_dataset, make_dataset, resolve
from kerasseg.data.pipeline import identity_lookup, label_lookup
from kerasseg.preprocessing import NORMALIZATIONS
from tests import dataset_fixtures as fx


def _batches(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_label_lookup_table():
    table = label_lookup({1: 0, 2: 1}, 255, ignore_values=[0])
    assert table.shape == (256,) and table.dtype == np.int32
    assert table[0] == 255 and table[1] == 0 and table[2] == 1 and table[255] == 255 and table[3] == -1


def test_label_check_modes(tmp_path, capfd):
    root = fx.camvid(tmp_path)
    fx.save_index(str(tmp_path / "valannot" / "0001TP_val001.png"), fx.ramp([0, 1, 40]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="Received other values in.*0001TP_val001.png"):
        _batches(load_dataset("camvid", root, "val", batch_size=1))
    capfd.readouterr()
    _, labels = _batches(load_dataset("camvid", root, "val", batch_size=1, label_check="warn"))
    err = capfd.readouterr().err
    assert "ignoring 32 pixels" in err and "0001TP_val001.png" in err
    np.testing.assert_array_equal(labels[0], np.where(fx.ramp([0, 1, 40]) == 40, 255, fx.ramp([0, 1, 40])))
    _, quiet = _batches(load_dataset("camvid", root, "val", batch_size=1, label_check="off"))
    np.testing.assert_array_equal(quiet, labels)
    with pytest.raises(ValueError, match="Received: label_check='loud'"):
        load_dataset("camvid", root, "val", batch_size=1, label_check="loud")


def test_bad_files_are_named(tmp_path):
    root = fx.camvid(tmp_path)
    label = tmp_path / "trainannot" / "0001TP_train001.png"
    data = label.read_bytes()
    label.write_bytes(data[:-20])
    with pytest.raises(ValueError, match="0001TP_train001.png.*truncated"):
        load_dataset("camvid", root, "train", batch_size=1)
    label.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="Expected a PNG or JPEG file. Received: .*0001TP_train001.png"):
        load_dataset("camvid", root, "train", batch_size=1)
    fx.save_index(str(label), np.zeros((fx.H + 1, fx.W), np.uint8))
    with pytest.raises(ValueError, match="same size.*train/0001TP_train001.png.*8x12.*trainannot/0001TP_train001.png"
                                         ".*9x12"):
        load_dataset("camvid", root, "train", batch_size=1)
    label.unlink()
    with pytest.raises(ValueError, match="Expected a label .*trainannot/0001TP_train001.png"):
        load_dataset("camvid", root, "train", batch_size=1)
    spec = resolve("camvid", root, "val")
    with pytest.raises(ValueError, match="an empty split"):
        make_dataset([], spec.classes, batch_size=1)


def test_validation_keeps_full_size_and_normalisation(tmp_path):
    root = fx.camvid(tmp_path)
    spec = resolve("camvid", root, "val")
    for name in ("imagenet", "symmetric"):
        images, labels = _batches(load_dataset("camvid", root, "val", batch_size=2, normalization=name))
        mean, std = NORMALIZATIONS[name]
        raw = np.asarray(fx.image(0), np.float32)  # 0001TP_val000.png, second in the (reversed) list
        np.testing.assert_allclose(images[1], (raw - mean) / std, atol=1e-5)
        assert labels.shape == (2, fx.H, fx.W)
    images, _ = _batches(load_dataset("camvid", root, "val", batch_size=2, normalization="symmetric"))
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert spec.lookup[11] == 255


def test_scale_pad_crop_flip_keep_labels_valid(tmp_path):
    root = fx.camvid(tmp_path)
    ds = load_dataset("camvid", root, "train", batch_size=3, crop_size=(16, 20), augment=True,
                      scale_range=(0.5, 2.0), photometric=True, blur=True, seed=3)
    images, labels = _batches(ds)
    assert images.shape == (3, 16, 20, 3) and labels.shape == (3, 16, 20)
    # Nearest-neighbour resizing invents no label value; padding is the ignore label.
    assert set(np.unique(labels)) <= set(range(11)) | {255}
    padded = labels == 255
    assert padded.sum() > 0


def test_deterministic_runs_and_photometric_leaves_labels(tmp_path):
    root = fx.camvid(tmp_path)

    def run(**kw):
        return _batches(load_dataset("camvid", root, "train", batch_size=3, crop_size=(6, 8), augment=True,
                                     scale_range=(0.5, 2.0), **kw))

    a, b = run(deterministic=True), run(deterministic=True)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = run(seed=0, photometric=True)
    d = run(seed=5)
    # Photometric distortion changes images only: the geometric transforms use the same seeds.
    np.testing.assert_array_equal(c[1], a[1])
    assert not np.allclose(c[0], a[0])
    assert not np.array_equal(d[0], a[0])


def test_photometric_distort_properties():
    image = tf.constant(fx.image(1, 16, 16), tf.float32)
    seeds = [tf.constant([s, 7]) for s in range(6)]
    outs = [augment.photometric_distort(image, s).numpy() for s in seeds]
    np.testing.assert_array_equal(outs[0], augment.photometric_distort(image, seeds[0]).numpy())
    assert all(o.min() >= 0 and o.max() <= 255 and o.shape == (16, 16, 3) for o in outs)
    assert sum(not np.allclose(o, image.numpy()) for o in outs) >= 4
    flat = tf.fill((9, 9, 3), 100.0)
    blurred = augment._gaussian_blur(flat, tf.constant(1.5)).numpy()
    np.testing.assert_allclose(blurred, 100.0, atol=1e-3)  # reflect padding: no dark frame


def test_identity_lookup_and_argument_errors(tmp_path):
    root = fx.folder(tmp_path)
    spec = resolve("folder", root, "val")
    np.testing.assert_array_equal(identity_lookup(spec.classes)[[0, 1, 2, 3, 255]], [0, 1, 2, -1, 255])
    with pytest.raises(ValueError, match="Expected lookup to be a 256-entry integer table"):
        make_dataset(spec.pairs, spec.classes, batch_size=1, lookup=np.arange(10))
    with pytest.raises(ValueError, match="Received: lookup values \\[7\\]"):
        make_dataset(spec.pairs, spec.classes, batch_size=1, lookup=label_lookup({0: 7}))
    with pytest.raises(ValueError, match="Expected blur only together with photometric=True"):
        make_dataset(spec.pairs, spec.classes, batch_size=1, augment=True, blur=True)
    with pytest.raises(ValueError, match="Received: batch_size=0"):
        make_dataset(spec.pairs, spec.classes, batch_size=0)


def test_fused_scale_crop_matches_scale_then_crop():
    label = np.kron(np.arange(20).reshape(4, 5) % 7, np.ones((12, 12))).astype(np.int32)
    image = np.repeat((label * 30.0)[..., None], 3, axis=-1).astype(np.float32)
    agreement = []
    for s in range(6):
        scale_seed, crop_seed = tf.constant([s, 1]), tf.constant([s, 2])
        img, lab = augment.random_scale_crop(tf.constant(image), tf.constant(label), scale_seed, crop_seed,
                                             (0.5, 2.0), (30, 40), image_value=-1.0, ignore_label=255)
        ref_img, ref_lab = augment.random_scale(tf.constant(image), tf.constant(label), scale_seed, (0.5, 2.0))
        ref_img, ref_lab = augment.random_crop(ref_img, ref_lab, (30, 40), crop_seed, image_value=-1.0,
                                               ignore_label=255)
        lab, ref_lab = lab.numpy(), ref_lab.numpy()
        assert lab.shape == (30, 40) and img.shape == (30, 40, 3)
        # Same factor and window: the padded area is identical, the labels agree up to border pixels.
        np.testing.assert_array_equal(lab == 255, ref_lab == 255)
        np.testing.assert_array_equal(img.numpy()[lab == 255], -1.0)
        agreement.append(np.mean(lab == ref_lab))
    assert min(agreement) > 0.9 and np.mean(agreement) > 0.95


def test_normalization_from_model_metadata(tmp_path):
    from kerasseg.preprocessing import ModelMetadata

    root = fx.camvid(tmp_path)
    meta = ModelMetadata("m", 11, [8, 12, 3], normalization="symmetric", mean=[127.5] * 3, std=[127.5] * 3)
    a, _ = _batches(load_dataset("camvid", root, "val", batch_size=2, normalization=meta))
    b, _ = _batches(load_dataset("camvid", root, "val", batch_size=2, normalization="symmetric"))
    np.testing.assert_array_equal(a, b)


def test_truncated_jpeg_is_named(tmp_path):
    root = fx.voc(tmp_path)
    jpeg = tmp_path / "JPEGImages" / "2007_000003.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:-40])
    with pytest.raises(ValueError, match="2007_000003.jpg.*truncated"):
        load_dataset("voc", root, "val", batch_size=1)
