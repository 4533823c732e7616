"""Whole / sliding-window / multi-scale inference, `evaluate`, reports and the visualisation helpers."""

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kerasseg.evaluation import (EvaluationResult, evaluate, format_table, keras_predict_fn, predict_labels,
                                 predict_logits, scores_from_confusion, window_starts, write_report)
from kerasseg.visualize import (colorize, confusion_matrix_image, default_palette, denormalize, label_image, overlay,
                                resolve_palette, save_confusion_png)

TILE = (16, 24)


class ContentFake:
    """A predict function whose logits are the image itself (3 "classes"): every pixel's output depends on the
    input at that very position, so a misplaced, mis-averaged or mis-mirrored tile shows up in the result."""

    input_shape = TILE + (3,)

    def __init__(self, offset_per_call=False, labels=False):
        self.calls = []
        self.offset_per_call = offset_per_call
        self.labels = labels

    def __call__(self, batch):
        batch = np.asarray(batch)
        assert batch.dtype == np.float32 and batch.shape[1:] == self.input_shape
        self.calls.append(batch.copy())
        out = batch.copy()
        if self.offset_per_call:
            out += len(self.calls)  # tile k (1-based) adds k: averaging must give the mean over covering tiles
        return out.argmax(-1).astype(np.int32) if self.labels else out


def _image(h, w, seed=0):
    return np.random.default_rng(seed).normal(size=(h, w, 3)).astype("float32")


# --------------------------------------------------------------------------------------------------- windows

@pytest.mark.parametrize("length,tile,stride", [(40, 16, 11), (16, 16, 11), (17, 16, 16), (100, 24, 1), (5, 16, 4)])
def test_window_starts_cover_the_image_without_running_past_it(length, tile, stride):
    starts = window_starts(length, tile, stride)
    assert starts[0] == 0 and starts == sorted(set(starts))
    covered = np.zeros(max(length, tile), bool)
    for s in starts:
        assert s + tile <= max(length, tile)
        covered[s:s + tile] = True
    assert covered[:length].all()
    assert all(b - a <= stride for a, b in zip(starts, starts[1:]))
    assert window_starts(40, 16, 11) == [0, 11, 22, 24]


# ----------------------------------------------------------------------------------------------------- modes

def test_slide_equals_whole_at_the_tile_size():
    fake = ContentFake()
    image = _image(*TILE)
    whole = predict_logits(fake, image, mode="whole")
    slide = predict_logits(fake, image, mode="slide")
    np.testing.assert_array_equal(whole, image)
    np.testing.assert_array_equal(slide, whole)
    assert len(fake.calls) == 2  # one tile each


def test_slide_reconstructs_a_position_dependent_map_larger_than_the_tile():
    image = _image(40, 57)
    fake = ContentFake()
    out = predict_logits(fake, image, mode="slide")
    np.testing.assert_allclose(out, image, atol=1e-6)
    ys, xs = window_starts(40, TILE[0], 11), window_starts(57, TILE[1], 16)
    assert len(fake.calls) == len(ys) * len(xs)
    # Batching tiles changes nothing.
    np.testing.assert_allclose(predict_logits(ContentFake(), image, mode="slide", batch_size=5), out, atol=1e-6)


def test_slide_averages_overlapping_tiles():
    image = _image(30, 50, seed=1)
    stride = (7, 9)
    out = predict_logits(ContentFake(offset_per_call=True), image, mode="slide", stride=stride)
    # Tile k (1-based, row-major) adds k to its pixels: each pixel gets the mean k of the tiles covering it.
    expected = np.zeros((30, 50))
    count = np.zeros((30, 50))
    k = 0
    for y in window_starts(30, TILE[0], stride[0]):
        for x in window_starts(50, TILE[1], stride[1]):
            k += 1
            expected[y:y + TILE[0], x:x + TILE[1]] += k
            count[y:y + TILE[0], x:x + TILE[1]] += 1
    np.testing.assert_allclose(out, image + (expected / count)[..., None], atol=1e-4)


def test_slide_pads_small_images_with_zeros_and_crops_back():
    image = _image(10, 13)
    fake = ContentFake()
    out = predict_logits(fake, image, mode="slide")
    np.testing.assert_array_equal(out, image)
    (batch,) = fake.calls
    np.testing.assert_array_equal(batch[0, :10, :13], image)
    assert not batch[0, 10:].any() and not batch[0, :, 13:].any()
    # A tall, narrow image: padded in width only, tiled in height.
    tall = _image(50, 7, seed=2)
    np.testing.assert_allclose(predict_logits(ContentFake(), tall, mode="slide"), tall, atol=1e-6)


def test_whole_resizes_to_the_input_size_and_back():
    image = _image(32, 48)
    fake = ContentFake()
    out = predict_logits(fake, image, mode="whole")
    (batch,) = fake.calls
    np.testing.assert_allclose(batch[0], tf.image.resize(image, TILE).numpy(), atol=1e-6)
    np.testing.assert_allclose(out, tf.image.resize(batch[0], (32, 48)).numpy(), atol=1e-6)


def _blocks(h, w, block, seed=0):
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 3, size=(h // block + 1, w // block + 1))
    labels = np.kron(classes, np.ones((block, block), int))[:h, :w]
    return (np.eye(3)[labels] * 4.0 - 2.0).astype("float32"), labels


def test_multiscale_with_a_scale_invariant_model_keeps_the_argmax():
    image, labels = _blocks(48, 72, block=12)
    out = predict_logits(ContentFake(), image, mode="multiscale", scales=(0.5, 0.75, 1.0, 1.5, 2.0))
    assert out.shape == (48, 72, 3)
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)  # averaged probabilities
    pred = out.argmax(-1)
    # Away from block borders (where resizing blends neighbours) every scale agrees exactly.
    interior = np.zeros_like(labels, bool)
    interior[3:-3, 3:-3] = True
    border = (np.diff(labels, axis=0, prepend=labels[:1]) != 0) | (np.diff(labels, axis=1, prepend=labels[:, :1]) != 0)
    near_border = tf.nn.max_pool2d(border[None, ..., None].astype("float32"), 7, 1, "SAME").numpy()[0, ..., 0] > 0
    np.testing.assert_array_equal(pred[interior & ~near_border], labels[interior & ~near_border])
    assert (pred == labels).mean() > 0.97


def test_multiscale_runs_every_scale_and_the_mirror():
    image = _image(24, 36)
    fake = ContentFake()
    predict_logits(fake, image, mode="multiscale", scales=(0.5, 1.0, 2.0), flip=True)
    expected = sum(len(window_starts(max(round(24 * s), TILE[0]), TILE[0], 11))
                   * len(window_starts(max(round(36 * s), TILE[1]), TILE[1], 16)) for s in (0.5, 1.0, 2.0))
    assert len(fake.calls) == 2 * expected
    fake = ContentFake()
    predict_logits(fake, image, mode="multiscale", scales=(1.0,), flip=False)
    assert len(fake.calls) == 4


class RampFake:
    """Ignores the image: class 0 rises and class 1 falls from left to right, so the mirror averages them out."""

    input_shape = TILE + (3,)

    def __call__(self, batch):
        ramp = np.linspace(0.0, 1.0, TILE[1], dtype=np.float32)
        out = np.zeros(batch.shape[:3] + (3,), np.float32)
        out[..., 0] = 4 * ramp
        out[..., 1] = 4 * (1 - ramp)
        return out


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_flip_mirrors_back_before_averaging(mode):
    image = _image(*TILE)
    plain = predict_logits(RampFake(), image, mode=mode)
    assert (plain[:, :5].argmax(-1) == 1).all() and (plain[:, -5:].argmax(-1) == 0).all()
    flipped = predict_logits(RampFake(), image, mode=mode, flip=True)
    np.testing.assert_allclose(flipped[..., 0], flipped[..., 1], atol=1e-6)
    # A content-following model is mirror-equivariant: flipping must give back the very same map.
    big = _image(30, 50)
    np.testing.assert_allclose(predict_logits(ContentFake(), big, mode=mode, flip=True),
                               predict_logits(ContentFake(), big, mode=mode), atol=1e-5)


def test_multiscale_flip_defaults_on():
    image = _image(*TILE)
    probs = predict_logits(RampFake(), image, mode="multiscale", scales=(1.0,))
    np.testing.assert_allclose(probs[..., 0], probs[..., 1], atol=1e-6)
    probs = predict_logits(RampFake(), image, mode="multiscale", scales=(1.0,), flip=False)
    assert not np.allclose(probs[..., 0], probs[..., 1])


def test_label_outputs_are_voted():
    image = _image(40, 57)
    labels = predict_labels(ContentFake(labels=True), image, mode="slide", num_classes=3)
    np.testing.assert_array_equal(labels, image.argmax(-1))
    votes = predict_logits(ContentFake(labels=True), image, mode="slide", num_classes=3)
    assert set(np.unique(votes.sum(-1)).round(6)) == {1.0}
    # Integer outputs are votes in multi-scale mode too: no softmax flattens them.
    votes = predict_logits(ContentFake(labels=True), _image(*TILE), mode="multiscale", scales=(1.0,), flip=False,
                           num_classes=3)
    assert set(np.unique(votes)) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="Expected num_classes for a predict_fn that returns label maps"):
        predict_logits(ContentFake(labels=True), image, mode="slide")


def test_argument_errors():
    image = _image(*TILE)
    with pytest.raises(ValueError, match="Received: mode='tiles'"):
        predict_logits(ContentFake(), image, mode="tiles")
    with pytest.raises(ValueError, match="Expected a stride no larger than the tile"):
        predict_logits(ContentFake(), image, mode="slide", stride=20)
    with pytest.raises(ValueError, match="3 channels"):
        predict_logits(ContentFake(), image[..., :2])
    with pytest.raises(ValueError, match="normalised float image"):
        predict_logits(ContentFake(), (image * 10).astype(np.uint8))
    with pytest.raises(ValueError, match="Expected input_size"):
        predict_logits(lambda b: b, image)
    with pytest.raises(ValueError, match="Expected predict_fn to return 5 class scores"):
        predict_logits(ContentFake(), image, num_classes=5)
    with pytest.raises(ValueError, match="scales"):
        predict_logits(ContentFake(), image, mode="multiscale", scales=(1.0, -0.5))
    with pytest.raises(ValueError, match="one normalised image"):
        predict_logits(ContentFake(), image[None])


# ------------------------------------------------------------------------------------------------- keras model

@pytest.fixture(scope="module")
def tiny_model():
    import kerasseg

    return kerasseg.build_model("erfnet", num_classes=3, input_shape=(32, 64, 3))


def test_keras_predict_fn_matches_the_model(tiny_model):
    fn = keras_predict_fn(tiny_model)
    assert fn.input_shape == (32, 64, 3)
    batch = np.random.default_rng(0).normal(size=(2, 32, 64, 3)).astype("float32")
    out = fn(batch)
    assert out.dtype == np.float32 and out.shape == (2, 32, 64, 3)
    np.testing.assert_allclose(out, tiny_model(batch, training=False).numpy(), atol=1e-5)
    # An image of exactly the input size: sliding window and whole image are the same single forward pass.
    image = batch[0]
    np.testing.assert_allclose(predict_logits(fn, image, mode="slide"), predict_logits(fn, image, mode="whole"),
                               atol=1e-6)
    big = np.random.default_rng(1).normal(size=(45, 100, 3)).astype("float32")
    for mode in ("whole", "slide", "multiscale"):
        out = predict_logits(fn, big, mode=mode, scales=(0.75, 1.25))
        assert out.shape == (45, 100, 3) and np.all(np.isfinite(out))


# ------------------------------------------------------------------------------------------------ evaluate()

def _numpy_scores(labels_list, preds_list, n, ignore=255):
    labels = np.concatenate([l.ravel() for l in labels_list])
    preds = np.concatenate([p.ravel() for p in preds_list])
    valid = (labels != ignore) & (labels >= 0) & (labels < n)
    labels, preds = labels[valid], preds[valid]
    cm = np.zeros((n, n), np.int64)
    for t, p in zip(labels, preds):
        cm[t, p] += 1
    iou, acc, dice = [], [], []
    for c in range(n):
        tp = np.sum((labels == c) & (preds == c))
        union = np.sum((labels == c) | (preds == c))
        gt, pr = np.sum(labels == c), np.sum(preds == c)
        iou.append(tp / union if union else np.nan)
        acc.append(tp / gt if gt else np.nan)
        dice.append(2 * tp / (gt + pr) if gt + pr else np.nan)
    return cm, {"miou": np.nanmean(iou), "iou": np.array(iou), "pixel_accuracy": np.mean(labels == preds),
                "mean_accuracy": np.nanmean(acc), "dice": np.array(dice), "mean_dice": np.nanmean(dice)}


@pytest.fixture
def pairs():
    rng = np.random.default_rng(5)
    out = []
    for h, w in [(16, 24), (40, 57), (10, 13), (33, 30)]:
        image = rng.normal(size=(h, w, 3)).astype("float32")
        # Labels agree with the "prediction" (argmax of the image) on about 70% of the pixels.
        labels = np.where(rng.random((h, w)) < 0.7, image.argmax(-1), rng.integers(0, 3, (h, w)))
        labels[rng.random((h, w)) < 0.1] = 255
        labels[0, 0] = 7  # outside [0, num_classes): not scored either
        out.append((image, labels.astype("int32")))
    return out


def test_evaluate_matches_a_direct_numpy_computation(pairs):
    result = evaluate(ContentFake(), pairs, num_classes=3, ignore_label=255, class_names=["a", "b", "c"],
                      mode="slide")
    cm, expected = _numpy_scores([l for _, l in pairs], [i.argmax(-1) for i, _ in pairs], 3)
    np.testing.assert_array_equal(result.confusion, cm)
    assert result.num_images == 4
    for key in ("miou", "pixel_accuracy", "mean_accuracy", "mean_dice"):
        assert getattr(result, key) == pytest.approx(expected[key], rel=1e-12), key
    np.testing.assert_allclose(result.iou, expected["iou"], rtol=1e-12)
    np.testing.assert_allclose(result.dice, expected["dice"], rtol=1e-12)
    assert [c["name"] for c in result.per_class()] == ["a", "b", "c"]
    assert result.settings == {"mode": "slide", "flip": False, "input_size": [16, 24], "stride": [11, 16]}


def test_evaluate_accepts_batched_tf_data_and_max_images(pairs):
    def gen():
        for image, labels in pairs:
            yield image[None], labels[None, ..., None]  # batch of one, (B, H, W, 1) labels

    spec = (tf.TensorSpec((1, None, None, 3), tf.float32), tf.TensorSpec((1, None, None, 1), tf.int32))
    dataset = tf.data.Dataset.from_generator(gen, output_signature=spec)
    reference = evaluate(ContentFake(), pairs, num_classes=3, mode="slide")
    result = evaluate(ContentFake(), dataset, num_classes=3, mode="slide")
    np.testing.assert_array_equal(result.confusion, reference.confusion)
    two = evaluate(ContentFake(), dataset, num_classes=3, mode="slide", max_images=2)
    cm, _ = _numpy_scores([l for _, l in pairs[:2]], [i.argmax(-1) for i, _ in pairs[:2]], 3)
    assert two.num_images == 2
    np.testing.assert_array_equal(two.confusion, cm)


def test_evaluate_errors(pairs):
    with pytest.raises(ValueError, match="empty dataset"):
        evaluate(ContentFake(), [], num_classes=3)
    with pytest.raises(ValueError, match="same size"):
        evaluate(ContentFake(), [(pairs[0][0], pairs[1][1])], num_classes=3)
    with pytest.raises(ValueError, match="Expected 3 class names"):
        evaluate(ContentFake(), pairs, num_classes=3, class_names=["a"])
    with pytest.raises(ValueError, match=r"\(image, label\) pairs"):
        evaluate(ContentFake(), [pairs[0][0]], num_classes=3)


def test_scores_from_confusion_new_keys():
    cm = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
    s = scores_from_confusion(cm)
    np.testing.assert_allclose(s["accuracy"][:2], [0.8, 0.75])
    assert np.isnan(s["accuracy"][2])
    # Long et al.: sum_c (t_c / total) * IoU_c.
    assert s["frequency_weighted_iou"] == pytest.approx((10 * 8 / 11 + 4 * 3 / 6) / 14)


# --------------------------------------------------------------------------------------------------- reports

def test_result_json_round_trip_and_report_files(tmp_path, pairs):
    result = evaluate(ContentFake(), pairs, num_classes=3, class_names=["road", "car", "sky"], mode="slide")
    paths = write_report(result, tmp_path / "out")
    data = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert data["miou"] == pytest.approx(result.miou)
    assert [c["name"] for c in data["classes"]] == ["road", "car", "sky"]
    assert data["confusion_matrix"] == result.confusion.tolist()
    again = EvaluationResult.from_json(paths["metrics"])
    np.testing.assert_array_equal(again.confusion, result.confusion)
    assert again.miou == result.miou and again.settings == result.settings
    with Image.open(paths["confusion"]) as im:
        assert im.format == "PNG" and im.mode == "RGB" and min(im.size) > 3 * 28
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary files left


def test_absent_classes_are_none_in_json_and_dash_in_the_table(tmp_path):
    result = EvaluationResult(confusion=np.array([[5, 1, 0], [2, 7, 0], [0, 0, 0]]), class_names=["x", "y", "z"],
                              num_images=1, settings={"mode": "whole"})
    path = result.to_json(tmp_path / "m.json")
    data = json.loads(open(path).read())
    assert data["classes"][2]["iou"] is None and data["classes"][2]["gt_pixels"] == 0
    table = format_table(result)
    lines = table.splitlines()
    z_line = next(line for line in lines if line.startswith("z "))
    assert z_line.split()[1:4] == ["-", "-", "-"]
    assert f"{100 * result.miou:.2f}" in table and "x " in table
    expected_miou = np.mean([5 / 8, 7 / 10])
    assert result.miou == pytest.approx(expected_miou)
    with pytest.raises(ValueError, match="Expected 3 class names"):
        EvaluationResult(confusion=np.zeros((3, 3)), class_names=["a"])


def test_confusion_png_colours(tmp_path):
    cm = np.diag([50, 20, 0]).astype(np.int64)
    cm[0, 1] = 50  # row 0: half right, half confused with class 1
    image = confusion_matrix_image(cm, ["a", "b", "c"])
    pixels = np.asarray(image).reshape(-1, 3)
    colours = {tuple(p) for p in pixels}
    assert (8, 48, 107) in colours  # the 100% cell of class 1
    assert (225, 225, 225) in colours  # class 2 has no ground truth: grey row
    path = save_confusion_png(cm, None, tmp_path / "cm.png")
    with Image.open(path) as im:
        assert im.size == confusion_matrix_image(cm).size
    with pytest.raises(ValueError, match="square"):
        confusion_matrix_image(np.zeros((2, 3)))


# -------------------------------------------------------------------------------------------------- visualize

def test_palettes_and_colorize():
    palette = default_palette(4)
    np.testing.assert_array_equal(palette, [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]])
    labels = np.array([[0, 1], [3, 255]])
    rgb = colorize(labels, palette, ignore_color=(9, 9, 9))
    np.testing.assert_array_equal(rgb[1, 1], [9, 9, 9])
    np.testing.assert_array_equal(rgb[1, 0], [128, 128, 0])
    # The default palette has a colour for 255 too; the ignore label still gets the ignore colour.
    np.testing.assert_array_equal(colorize(labels)[1, 1], [0, 0, 0])
    np.testing.assert_array_equal(colorize(labels, ignore_label=None)[1, 1], default_palette(256)[255])
    np.testing.assert_array_equal(colorize(labels, palette, ignore_label=3)[1, 0], [0, 0, 0])
    with pytest.raises(ValueError, match="at least 5 palette colours"):
        resolve_palette(palette, 5)
    with pytest.raises(ValueError, match="integer"):
        colorize(np.zeros((2, 2), np.float32), palette)


def test_overlay_and_denormalize():
    image = np.full((2, 2, 3), 100, np.uint8)
    labels = np.array([[1, 0], [255, 1]])
    palette = [[0, 0, 0], [200, 0, 0]]
    out = overlay(image, labels, palette, alpha=0.25)
    np.testing.assert_array_equal(out[0, 0], [125, 75, 75])
    np.testing.assert_array_equal(out[1, 0], [100, 100, 100])  # ignore label left as is
    mean, std = (10.0, 20.0, 30.0), (2.0, 4.0, 5.0)
    pixels = np.array([[[12, 24, 255]]], np.uint8)
    normalised = (pixels - np.array(mean)) / np.array(std)
    np.testing.assert_array_equal(denormalize(normalised, mean, std), pixels)
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, labels, palette, alpha=2)


def test_label_image_keeps_indices(tmp_path):
    labels = np.array([[0, 1, 2], [255, 7, 1]])
    path = tmp_path / "l.png"
    label_image(labels, default_palette(8)).save(path)
    with Image.open(path) as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(np.asarray(im), labels)
        assert im.getpalette()[3:6] == [128, 0, 0]
    wide = np.array([[0, 300]])
    label_image(wide).save(tmp_path / "w.png")
    with Image.open(tmp_path / "w.png") as im:
        np.testing.assert_array_equal(np.asarray(im), wide)


def test_score_pairs_counts_every_runtime_on_the_same_pairs():
    from kerasseg.evaluation import Prediction, score_pairs

    labels = np.array([[[0, 1], [1, 255]]] * 3)
    images = np.zeros((3, 2, 2, 3), np.float32)
    exact = lambda image, size: Prediction(np.where(labels[0] == 255, 0, labels[0]), np.ones((2, 2, 2)))  # noqa: E731
    wrong = lambda image, size: Prediction(np.zeros(size, np.int64), np.full((2, 2, 2), 1.5))  # noqa: E731
    counted = score_pairs(list(zip(images, labels)), {"a": exact, "b": wrong, "c": lambda i, s: np.zeros(s, int)},
                          num_classes=2, max_images=2, per_image=True)
    assert counted.num_images == 2 and counted.num_scored == 6
    np.testing.assert_array_equal(counted.confusion["a"].matrix, [[2, 0], [0, 4]])
    np.testing.assert_array_equal(counted.confusion["b"].matrix, [[2, 0], [4, 0]])
    assert counted.agreement == {"a": 1.0, "b": 2 / 6, "c": 2 / 6}
    assert counted.max_abs_error == {"a": 0.0, "b": 0.5, "c": None}
    assert counted.image_confusion["a"].shape == (2, 2, 2)
    assert counted.to_dict()["runtimes"]["b"]["confusion_matrix"] == [[2, 0], [4, 0]]
    with pytest.raises(ValueError, match="label size"):
        score_pairs(list(zip(images, labels)), {"a": lambda i, s: np.zeros((3, 3), int)}, num_classes=2)
    with pytest.raises(ValueError, match="scored pixels"):
        score_pairs([(images[0], np.full((2, 2), 255))], {"a": exact}, num_classes=2, require_scored=True)


def test_one_name_per_concept():
    import kerasseg.evaluation as evaluation
    import kerasseg.export as export
    from kerasseg.errors import AccuracyDropError, KerasSegError
    from kerasseg.evaluation.inference import OUTPUTS
    from kerasseg.runtimes import OUTPUT_HEADS

    assert export.OUTPUT_HEADS is OUTPUT_HEADS is OUTPUTS is evaluation.OUTPUT_HEADS
    assert export.MODES is export.TFLITE_MODES and evaluation.MODES is evaluation.INFERENCE_MODES
    assert issubclass(AccuracyDropError, (ValueError, RuntimeError, KerasSegError))
    for error in (export.EdgeCompatibilityError, export.ONNXMismatchError, export.GpuUnavailableError):
        assert issubclass(error, KerasSegError)
    assert callable(export.check) and callable(export.parity)
    # The functions' modules have their own names, so no attribute of kerasseg.export hides a module.
    from kerasseg.export.compat import check
    from kerasseg.export.harness import parity

    assert check is export.check and parity is export.parity
