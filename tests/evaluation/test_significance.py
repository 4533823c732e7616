"""Per-image confusion matrices and the paired bootstrap of mIoU differences."""

import numpy as np
import pytest

from kerasseg.evaluation import ConfusionMatrix, image_confusions, paired_bootstrap, scores_from_confusion

C = 5


def _noisy(labels, accuracy, rng):
    return np.where(rng.random(labels.shape) < accuracy, labels, rng.integers(0, C, labels.shape))


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, C, (30, 12, 16))
    labels[:, :2] = 255
    labels[3] = 255  # an image without any scored pixel
    return labels, rng


def test_image_confusions_sum_to_the_streaming_matrix(scenes):
    labels, rng = scenes
    preds = _noisy(labels, 0.6, rng)
    per_image = image_confusions(labels, preds, C, 255)
    assert per_image.shape == (30, C, C) and per_image.dtype == np.int64
    assert np.array_equal(per_image.sum(axis=0), ConfusionMatrix(C, 255).update(labels, preds).matrix)
    for i in (0, 3, 29):
        assert np.array_equal(per_image[i], ConfusionMatrix(C, 255).update(labels[i], preds[i]).matrix)
    assert per_image[3].sum() == 0
    # Without an ignore label, 255 is still outside the class range and not counted.
    assert np.array_equal(image_confusions(labels, preds, C, None), per_image)


def test_paired_bootstrap_difference_and_interval(scenes):
    labels, rng = scenes
    good, bad = _noisy(labels, 0.8, rng), _noisy(labels, 0.5, rng)
    a, b = image_confusions(labels, good, C), image_confusions(labels, bad, C)
    result = paired_bootstrap(a, b, num_samples=500, seed=1)
    expected = 100 * (scores_from_confusion(a.sum(0))["miou"] - scores_from_confusion(b.sum(0))["miou"])
    assert result["difference"] == pytest.approx(expected)
    assert 0 < result["low"] < result["difference"] < result["high"]
    assert result["prob_a_better"] == 1.0
    assert result["num_images"] == 30 and result["num_samples"] == 500 and result["confidence"] == 0.95
    # Reversing the pair mirrors the interval; the same seed gives the same figures.
    reverse = paired_bootstrap(b, a, num_samples=500, seed=1)
    assert reverse["low"] == pytest.approx(-result["high"]) and reverse["high"] == pytest.approx(-result["low"])
    assert paired_bootstrap(a, b, num_samples=500, seed=1) == result
    # A wider coverage gives a wider interval.
    wide = paired_bootstrap(a, b, num_samples=500, seed=1, confidence=0.99)
    assert wide["low"] <= result["low"] and wide["high"] >= result["high"]


def test_paired_bootstrap_of_equal_predictions_is_zero(scenes):
    labels, rng = scenes
    a = image_confusions(labels, _noisy(labels, 0.7, rng), C)
    result = paired_bootstrap(a, a.copy(), num_samples=200)
    assert result["difference"] == result["low"] == result["high"] == 0.0
    assert result["prob_a_better"] == 0.0


def test_paired_bootstrap_interval_straddles_zero_for_noise(scenes):
    # Two equally good predictors: the interval must contain 0 (with this seed), however the point estimate falls.
    labels, _ = scenes
    rng = np.random.default_rng(7)
    a = image_confusions(labels, _noisy(labels, 0.7, rng), C)
    b = image_confusions(labels, _noisy(labels, 0.7, rng), C)
    result = paired_bootstrap(a, b, num_samples=1000)
    assert result["low"] < 0 < result["high"]
    assert 0 < result["prob_a_better"] < 1


@pytest.mark.parametrize("kwargs, match", [
    ({"confusions_b": np.zeros((4, C, C))}, "same shape"),
    ({"confusions_a": np.zeros((1, C, C)), "confusions_b": np.zeros((1, C, C))}, "at least 2 images"),
    ({"confusions_a": np.zeros((3, C)), "confusions_b": np.zeros((3, C))}, r"\(N, C, C\)"),
    ({"num_samples": 0}, "num_samples=0"),
    ({"num_samples": 2.5}, "num_samples=2.5"),
    ({"confidence": 1.0}, "confidence=1.0"),
    ({"confidence": True}, "confidence=True"),
])
def test_paired_bootstrap_rejects_bad_arguments(kwargs, match):
    args = {"confusions_a": np.zeros((3, C, C)), "confusions_b": np.zeros((3, C, C))}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        paired_bootstrap(**args)


def test_image_confusions_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"labels \(2, 4\) and predictions \(2, 5\)"):
        image_confusions(np.zeros((2, 4)), np.zeros((2, 5)), C)


def test_confusion_matrix_to_dict():
    cm = ConfusionMatrix(2, 255).update(np.array([[0, 1], [255, 1]]), np.array([[0, 0], [1, 1]]))
    assert cm.to_dict() == {"num_classes": 2, "ignore_label": 255, "matrix": [[1, 0], [1, 1]], "miou": 0.5}
