import numpy as np
import pytest
import tensorflow as tf

from kerasseg.evaluation import ConfusionMatrix
from kerasseg.losses import SparseCategoricalCrossentropyIgnore
from kerasseg.metrics import MeanIoU


def _numpy_ce(labels, logits, ignore=255, weights=None):
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    valid = labels != ignore
    lab = np.where(valid, labels, 0)
    nll = -np.take_along_axis(logp, lab[..., None], -1)[..., 0]
    w = valid.astype(np.float64) if weights is None else valid * np.asarray(weights)[lab]
    return (nll * w).sum() / w.sum()


def _numpy_miou(labels, preds, n, ignore=255):
    ious = []
    valid = labels != ignore
    for c in range(n):
        t, p = (labels == c) & valid, (preds == c) & valid
        union = (t | p).sum()
        if union:
            ious.append((t & p).sum() / union)
    return np.mean(ious), ious


@pytest.fixture
def batch():
    rng = np.random.default_rng(42)
    logits = rng.normal(size=(3, 9, 11, 5)).astype("float32") * 3
    labels = rng.integers(0, 5, size=(3, 9, 11)).astype("int32")
    labels[rng.random(labels.shape) < 0.2] = 255
    return labels, logits


def test_cross_entropy_matches_numpy_and_ignores(batch):
    labels, logits = batch
    loss = SparseCategoricalCrossentropyIgnore()(labels, logits)
    np.testing.assert_allclose(float(loss), _numpy_ce(labels, logits), rtol=1e-5)
    # Changing logits at ignored pixels changes nothing.
    logits2 = logits.copy()
    logits2[labels == 255] = 100.0
    np.testing.assert_allclose(float(SparseCategoricalCrossentropyIgnore()(labels, logits2)), float(loss), rtol=1e-6)


def test_cross_entropy_class_weights(batch):
    labels, logits = batch
    w = [1.0, 2.0, 0.5, 3.0, 1.5]
    loss = SparseCategoricalCrossentropyIgnore(class_weights=w)(labels, logits)
    np.testing.assert_allclose(float(loss), _numpy_ce(labels, logits, weights=w), rtol=1e-5)
    with pytest.raises(ValueError, match="Expected 5 class_weights"):
        SparseCategoricalCrossentropyIgnore(class_weights=[1.0, 2.0])(labels, logits)


def test_cross_entropy_all_ignored_is_zero_not_nan():
    labels = np.full((1, 4, 4), 255, np.int32)
    logits = np.zeros((1, 4, 4, 3), np.float32)
    assert float(SparseCategoricalCrossentropyIgnore()(labels, logits)) == 0.0


def test_loss_config_roundtrip():
    loss = SparseCategoricalCrossentropyIgnore(ignore_label=11, class_weights=[1, 2])
    again = SparseCategoricalCrossentropyIgnore.from_config(loss.get_config())
    assert again.ignore_label == 11 and again.class_weights == [1.0, 2.0]


def test_miou_matches_numpy_streaming(batch):
    labels, logits = batch
    metric = MeanIoU(5)
    cm = ConfusionMatrix(5)
    for i in range(3):  # streamed image by image
        metric.update_state(labels[i:i + 1], logits[i:i + 1])
        cm.update(labels[i], logits[i].argmax(-1))
    expected, per_class = _numpy_miou(labels, logits.argmax(-1), 5)
    assert float(metric.result()) == pytest.approx(expected, rel=1e-6)
    assert cm.miou == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(metric.per_class_iou(), per_class, rtol=1e-9)
    np.testing.assert_array_equal(metric.confusion_matrix(), cm.matrix)
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_miou_accepts_label_maps_and_skips_absent_classes():
    labels = np.array([[0, 0, 1, 255]])
    preds = np.array([[0, 1, 1, 2]])
    metric = MeanIoU(4)
    metric.update_state(labels, preds)
    # class 0: 1/2, class 1: 1/2, classes 2 (only at an ignored pixel) and 3 absent -> mean of two.
    assert float(metric.result()) == pytest.approx(0.5)
    assert np.isnan(metric.per_class_iou()[3])


def test_confusion_scores():
    cm = ConfusionMatrix(2)
    cm.update(np.array([0, 0, 1, 1, 255]), np.array([0, 1, 1, 1, 0]))
    s = cm.scores()
    assert s["pixel_accuracy"] == pytest.approx(3 / 4)
    np.testing.assert_allclose(s["iou"], [1 / 2, 2 / 3])
    assert s["mean_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    with pytest.raises(ValueError, match="same size"):
        cm.update(np.zeros(3), np.zeros(4))


def test_metric_in_a_compiled_model_under_tf_function(batch):
    labels, logits = batch
    metric = MeanIoU(5)

    @tf.function
    def step(y, p):
        metric.update_state(y, p)

    step(tf.constant(labels), tf.constant(logits))
    assert float(metric.result()) == pytest.approx(_numpy_miou(labels, logits.argmax(-1), 5)[0], rel=1e-6)
