"""OHEM, Dice, focal, Lovász-Softmax, combined losses and `get_loss`, checked against plain numpy implementations."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasseg.losses import (CombinedLoss, DiceLoss, FocalLoss, LovaszSoftmax, OHEMCrossEntropy,
                             SparseCategoricalCrossentropyIgnore, get_loss)

NUM_CLASSES = 5


# ---------------------------------------------------------------------------------------------- numpy references

def _softmax(logits):
    z = logits.astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _valid(labels, num_classes=NUM_CLASSES, ignore=255):
    return (labels >= 0) & (labels < num_classes) & (labels != ignore)


def _np_ohem(labels, logits, threshold, min_kept, weights=None):
    valid = _valid(labels)
    probs = _softmax(logits)[valid]
    lab = labels[valid]
    p_true = probs[np.arange(len(lab)), lab]
    ce = -np.log(p_true)
    if min_kept >= len(lab):
        kept = np.ones(len(lab), bool)
    else:
        thr = threshold
        if min_kept > 0:
            thr = max(threshold, np.sort(p_true)[min_kept - 1])
        kept = p_true <= thr
    w = np.ones(len(lab)) if weights is None else np.asarray(weights, np.float64)[lab]
    w = w * kept
    return (ce * w).sum() / w.sum(), int(kept.sum())


def _np_dice(labels, logits, smooth=1.0, weights=None):
    valid = _valid(labels)
    probs = _softmax(logits)[valid]
    lab = labels[valid]
    dices, ws = [], []
    for c in range(logits.shape[-1]):
        g = (lab == c).astype(np.float64)
        if g.sum() == 0:
            continue
        p = probs[:, c]
        dices.append((2 * (p * g).sum() + smooth) / (p.sum() + g.sum() + smooth))
        ws.append(1.0 if weights is None else weights[c])
    return 1.0 - np.average(dices, weights=ws)


def _np_focal(labels, logits, gamma, alpha=None):
    valid = _valid(labels)
    probs = _softmax(logits)[valid]
    lab = labels[valid]
    pt = probs[np.arange(len(lab)), lab]
    a = np.ones(len(lab)) if alpha is None else (
        np.asarray(alpha)[lab] if np.ndim(alpha) else np.full(len(lab), float(alpha)))
    return np.mean(-a * (1 - pt) ** gamma * np.log(pt))


def _np_lovasz_grad(gt_sorted):
    # Berman et al., Algorithm 1, as in the authors' reference implementation.
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum()
    union = gts + (1.0 - gt_sorted).cumsum()
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def _np_lovasz_flat(probs, labels, classes="present"):
    if len(labels) == 0:
        return 0.0
    losses = []
    for c in (range(probs.shape[1]) if classes in ("all", "present") else classes):
        fg = (labels == c).astype(np.float64)
        if classes == "present" and fg.sum() == 0:
            continue
        errors = np.abs(fg - probs[:, c])
        order = np.argsort(-errors, kind="stable")
        losses.append(np.dot(errors[order], _np_lovasz_grad(fg[order])))
    return float(np.mean(losses)) if losses else 0.0


def _np_lovasz(labels, logits, per_image=False, classes="present"):
    probs = _softmax(logits)
    if per_image:
        return np.mean([_np_lovasz_flat(p[v], l[v], classes)
                        for p, l, v in zip(probs, labels, _valid(labels))])
    valid = _valid(labels)
    return _np_lovasz_flat(probs[valid], labels[valid], classes)


# ------------------------------------------------------------------------------------------------------- fixtures

@pytest.fixture
def batch():
    rng = np.random.default_rng(7)
    logits = (rng.normal(size=(2, 7, 9, NUM_CLASSES)) * 2.5).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, size=(2, 7, 9)).astype("int32")
    labels[rng.random(labels.shape) < 0.25] = 255
    return labels, logits


def _value(loss, labels, logits):
    return float(loss(tf.constant(labels), tf.constant(logits)))


ALL_LOSSES = [
    OHEMCrossEntropy(threshold=0.5, min_kept=20),
    DiceLoss(),
    FocalLoss(gamma=2.0, alpha=[1.0, 0.5, 2.0, 1.0, 0.25]),
    LovaszSoftmax(),
    LovaszSoftmax(per_image=True, classes="all"),
    CombinedLoss([SparseCategoricalCrossentropyIgnore(), LovaszSoftmax()], [1.0, 0.5]),
]


# --------------------------------------------------------------------------------------------------------- values

@pytest.mark.parametrize("threshold,min_kept", [(0.7, 0), (0.7, 25), (1e-4, 10), (0.3, 1000), (1.0, 5)])
def test_ohem_matches_numpy(batch, threshold, min_kept):
    labels, logits = batch
    expected, kept = _np_ohem(labels, logits, threshold, min_kept)
    loss = OHEMCrossEntropy(threshold=threshold, min_kept=min_kept)
    assert _value(loss, labels, logits) == pytest.approx(expected, rel=1e-5)
    if threshold == 1e-4:
        # The threshold alone keeps fewer: the min_kept hardest pixels are kept, and they are harder than average.
        assert kept == 10
        assert _value(loss, labels, logits) > _value(SparseCategoricalCrossentropyIgnore(), labels, logits)
    if min_kept == 1000:  # more than the valid pixels: plain cross-entropy
        np.testing.assert_allclose(_value(loss, labels, logits),
                                   _value(SparseCategoricalCrossentropyIgnore(), labels, logits), rtol=1e-5)


def test_ohem_class_weights(batch):
    labels, logits = batch
    w = [1.0, 2.0, 0.5, 3.0, 1.5]
    expected, _ = _np_ohem(labels, logits, 0.6, 30, weights=w)
    assert _value(OHEMCrossEntropy(threshold=0.6, min_kept=30, class_weights=w), labels, logits) == \
        pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("smooth,weights", [(1.0, None), (0.0, None), (0.5, [1.0, 2.0, 0.0, 1.0, 3.0])])
def test_dice_matches_numpy(batch, smooth, weights):
    labels, logits = batch
    loss = DiceLoss(smooth=smooth, class_weights=weights)
    assert _value(loss, labels, logits) == pytest.approx(_np_dice(labels, logits, smooth, weights), rel=1e-5)


def test_dice_averages_over_present_classes_only(batch):
    labels, logits = batch
    labels = np.where(labels == 4, 255, labels)  # class 4 absent from the targets
    logits = logits.copy()
    reference = _value(DiceLoss(), labels, logits)
    logits[..., 4] += 3.0  # predicting the absent class more only lowers the other classes' overlap
    assert _value(DiceLoss(), labels, logits) == pytest.approx(_np_dice(labels, logits), rel=1e-5)
    assert _value(DiceLoss(), labels, logits) > reference
    perfect = np.where(labels[..., None] == np.arange(NUM_CLASSES), 30.0, -30.0).astype("float32")
    assert _value(DiceLoss(), labels, perfect) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("gamma,alpha", [(2.0, None), (0.0, None), (0.5, 0.25), (1.5, [1.0, 0.5, 2.0, 1.0, 0.25])])
def test_focal_matches_numpy(batch, gamma, alpha):
    labels, logits = batch
    loss = FocalLoss(gamma=gamma, alpha=alpha)
    assert _value(loss, labels, logits) == pytest.approx(_np_focal(labels, logits, gamma, alpha), rel=1e-5)
    if gamma == 0.0 and alpha is None:
        np.testing.assert_allclose(_value(loss, labels, logits),
                                   _value(SparseCategoricalCrossentropyIgnore(), labels, logits), rtol=1e-5)


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("classes", ["present", "all", [0, 3]])
def test_lovasz_matches_berman_reference(batch, per_image, classes):
    labels, logits = batch
    loss = LovaszSoftmax(per_image=per_image, classes=classes)
    expected = _np_lovasz(labels, logits, per_image, classes)
    assert _value(loss, labels, logits) == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_lovasz_with_an_image_without_valid_pixels(batch):
    labels, logits = batch
    labels = labels.copy()
    labels[1] = 255  # the reference gives such an image loss 0 and still averages over it
    for per_image in (False, True):
        expected = _np_lovasz(labels, logits, per_image)
        assert _value(LovaszSoftmax(per_image=per_image), labels, logits) == pytest.approx(expected, rel=1e-5)
    assert _value(LovaszSoftmax(per_image=True), labels, logits) == pytest.approx(
        0.5 * _np_lovasz(labels[:1], logits[:1]), rel=1e-5)


def test_lovasz_is_zero_for_a_perfect_prediction_and_tracks_iou(batch):
    labels, _ = batch
    perfect = np.where(labels[..., None] == np.arange(NUM_CLASSES), 40.0, -40.0).astype("float32")
    assert _value(LovaszSoftmax(), labels, perfect) == pytest.approx(0.0, abs=1e-6)
    # For one-hot "probabilities" the Lovász extension equals the Jaccard loss: 1 - mIoU over present classes.
    rng = np.random.default_rng(3)
    preds = np.where(rng.random(labels.shape) < 0.7, labels, rng.integers(0, NUM_CLASSES, labels.shape))
    preds = np.where(labels == 255, 0, preds)
    hard = np.where(preds[..., None] == np.arange(NUM_CLASSES), 40.0, -40.0).astype("float32")
    valid = labels != 255
    ious = [((labels == c) & (preds == c) & valid).sum() / (((labels == c) | (preds == c)) & valid).sum()
            for c in range(NUM_CLASSES) if ((labels == c) & valid).any()]
    assert _value(LovaszSoftmax(), labels, hard) == pytest.approx(1.0 - np.mean(ious), rel=1e-5)


def test_combined_loss_is_the_weighted_sum(batch):
    labels, logits = batch
    combined = CombinedLoss([SparseCategoricalCrossentropyIgnore(), DiceLoss(), LovaszSoftmax()], [1.0, 0.5, 2.0])
    expected = (_value(SparseCategoricalCrossentropyIgnore(), labels, logits) + 0.5 * _np_dice(labels, logits)
                + 2.0 * _np_lovasz(labels, logits))
    assert _value(combined, labels, logits) == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------------------------- ignore label and gradients

@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda l: l.name)
def test_ignored_pixels_never_change_the_loss(batch, loss):
    labels, logits = batch
    reference = _value(loss, labels, logits)
    ignored = labels == 255
    changed = logits.copy()
    changed[ignored] = np.random.default_rng(1).normal(size=(ignored.sum(), NUM_CLASSES)) * 50
    assert _value(loss, labels, changed) == pytest.approx(reference, rel=1e-6)
    # Labels outside [0, num_classes) are ignored exactly like the ignore label.
    for other in (-1, NUM_CLASSES, 17):
        assert _value(loss, np.where(ignored, other, labels), logits) == pytest.approx(reference, rel=1e-6)
    # (B, H, W, 1) labels are accepted.
    assert _value(loss, labels[..., None], logits) == pytest.approx(reference, rel=1e-6)


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda l: l.name)
def test_gradients_are_finite_and_zero_at_ignored_pixels(batch, loss):
    labels, logits = batch
    logits = logits.copy()
    logits[0, 0, 0] = [60.0, -60.0, 0.0, 0.0, 0.0]  # saturated softmax
    x = tf.Variable(logits)
    with tf.GradientTape() as tape:
        value = loss(tf.constant(labels), x)
    grad = tape.gradient(value, x).numpy()
    assert np.isfinite(float(value)) and np.all(np.isfinite(grad))
    assert np.abs(grad).sum() > 0
    np.testing.assert_array_equal(grad[labels == 255], 0.0)


@pytest.mark.parametrize("loss", ALL_LOSSES + [FocalLoss(gamma=0.5)], ids=lambda l: l.name)
def test_all_ignored_batch_gives_zero(loss):
    labels = np.full((2, 4, 4), 255, np.int32)
    x = tf.Variable(np.random.default_rng(0).normal(size=(2, 4, 4, NUM_CLASSES)).astype("float32"))
    with tf.GradientTape() as tape:
        value = loss(tf.constant(labels), x)
    assert float(value) == 0.0
    assert np.all(np.isfinite(tape.gradient(value, x).numpy()))


def test_losses_compute_in_float32_under_mixed_precision(batch):
    labels, logits = batch
    big = logits * 40  # CE terms in the thousands: float16 softmax arithmetic would be off by whole units
    policy = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy("mixed_float16")
        for loss in (OHEMCrossEntropy(min_kept=10), DiceLoss(), FocalLoss(), LovaszSoftmax()):
            value = loss(tf.constant(labels), tf.constant(big, tf.float16))
            assert value.dtype == tf.float32
            reference = loss(labels, big.astype(np.float16).astype(np.float32))
            assert np.isfinite(float(value))
            assert float(value) == pytest.approx(float(reference), rel=1e-6)
            # `call` itself casts: float16 logits handed straight to it are still computed in float32.
            direct = loss.call(tf.constant(labels), tf.constant(big, tf.float16))
            assert direct.dtype == tf.float32
            assert float(direct[0]) == pytest.approx(float(reference), rel=1e-6)
    finally:
        keras.config.set_dtype_policy(policy)


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda l: l.name)
def test_losses_compile_with_xla(batch, loss):
    # Keras compiles the train step with XLA by default where it can: every op must have an XLA kernel and
    # static sizes (OHEM's top-k included).
    labels, logits = batch
    compiled = tf.function(lambda y, p: loss(y, p), jit_compile=True)
    assert float(compiled(tf.constant(labels), tf.constant(logits))) == pytest.approx(
        _value(loss, labels, logits), rel=1e-5)


def test_sample_weight_is_rejected_with_a_clear_message(batch):
    labels, logits = batch
    with pytest.raises(ValueError, match="Expected sample_weight=None"):
        DiceLoss()(labels, logits, sample_weight=np.ones(labels.shape, np.float32))


# ----------------------------------------------------------------------------------------- configs and factory

@pytest.mark.parametrize("loss", [
    OHEMCrossEntropy(ignore_label=11, threshold=0.6, min_kept=123, class_weights=[1, 2, 3]),
    DiceLoss(ignore_label=0, smooth=0.5, class_weights=[1, 0.5]),
    FocalLoss(ignore_label=3, gamma=1.5, alpha=[0.25, 0.75]),
    FocalLoss(alpha=0.25),
    LovaszSoftmax(ignore_label=19, per_image=True, classes=[1, 2]),
    CombinedLoss([OHEMCrossEntropy(min_kept=5), LovaszSoftmax(per_image=True)], [1.0, 0.25]),
], ids=lambda l: l.name)
def test_config_round_trip(loss):
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(again) is type(loss)
    assert again.get_config() == loss.get_config()
    if isinstance(loss, CombinedLoss):
        assert [type(l) for l in again.losses] == [type(l) for l in loss.losses]
        assert again.losses[0].min_kept == 5 and again.losses[1].per_image


def test_compiled_model_with_combined_loss_saves_and_loads(tmp_path, batch):
    import kerasseg

    labels, logits = batch
    inputs = keras.Input((7, 9, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(NUM_CLASSES, 1)(inputs))
    model.compile(optimizer="sgd", loss=get_loss("ce+0.5*lovasz", ignore_label=255))
    images = np.random.default_rng(0).normal(size=(2, 7, 9, 3)).astype("float32")
    model.fit(images, labels, epochs=1, verbose=0)
    path = kerasseg.save_model(model, tmp_path / "m.keras")
    loaded = kerasseg.load_model(path, compile=True)
    assert isinstance(loaded.loss, CombinedLoss) and loaded.loss.weights == [1.0, 0.5]
    np.testing.assert_allclose(loaded.evaluate(images, labels, verbose=0), model.evaluate(images, labels, verbose=0),
                               rtol=1e-5)


def test_get_loss_names_and_sums(batch):
    labels, logits = batch
    assert isinstance(get_loss("ce"), SparseCategoricalCrossentropyIgnore)
    assert isinstance(get_loss("ohem"), OHEMCrossEntropy)
    assert isinstance(get_loss("dice"), DiceLoss)
    assert isinstance(get_loss("focal"), FocalLoss)
    assert isinstance(get_loss("lovasz"), LovaszSoftmax)
    loss = get_loss(" CE + 0.5*lovasz ")
    assert isinstance(loss, CombinedLoss) and loss.weights == [1.0, 0.5]
    assert _value(loss, labels, logits) == pytest.approx(
        _value(SparseCategoricalCrossentropyIgnore(), labels, logits) + 0.5 * _np_lovasz(labels, logits), rel=1e-5)
    assert get_loss("dice*2").weights == [2.0]
    # Keyword arguments go to every term that accepts them.
    loss = get_loss("ce+focal", ignore_label=7, alpha=0.5, class_weights=[1, 2])
    assert [l.ignore_label for l in loss.losses] == [7, 7]
    assert loss.losses[0].class_weights == [1.0, 2.0] and loss.losses[1].alpha == 0.5
    same = LovaszSoftmax()
    assert get_loss(same) is same


def test_get_loss_errors():
    with pytest.raises(ValueError, match=r"Unknown loss 'iou'.*\['ce', 'dice', 'focal', 'lovasz', 'ohem'\]"):
        get_loss("ce+iou")
    with pytest.raises(ValueError, match="WEIGHT\\*NAME"):
        get_loss("half*dice")
    with pytest.raises(ValueError, match="Expected a loss name"):
        get_loss("")
    with pytest.raises(TypeError, match=r"\['gamma'\] that no term accepts"):
        get_loss("ce+dice", gamma=2.0)


def test_constructor_validation():
    with pytest.raises(ValueError, match="Received: threshold=1.5"):
        OHEMCrossEntropy(threshold=1.5)
    with pytest.raises(ValueError, match="Received: min_kept=-1"):
        OHEMCrossEntropy(min_kept=-1)
    with pytest.raises(ValueError, match="Received: gamma=-1"):
        FocalLoss(gamma=-1)
    with pytest.raises(ValueError, match="Received: classes='some'"):
        LovaszSoftmax(classes="some")
    with pytest.raises(ValueError, match="non-negative"):
        DiceLoss(class_weights=[1, -1])
    with pytest.raises(ValueError, match="one weight per loss"):
        CombinedLoss([DiceLoss(), FocalLoss()], [1.0])
    with pytest.raises(ValueError, match="Expected 5 class_weights"):
        DiceLoss(class_weights=[1, 2])(np.zeros((1, 2, 2), np.int32), np.zeros((1, 2, 2, 5), np.float32))
    with pytest.raises(ValueError, match="Expected labels of shape"):
        FocalLoss()(np.zeros((1, 3, 2), np.int32), np.zeros((1, 2, 2, 5), np.float32))
