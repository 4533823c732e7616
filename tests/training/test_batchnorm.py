"""Batch-norm statistics re-estimation (`kerasseg.training.recalibrate_batch_norm`)."""

import numpy as np
import pytest

from kerasseg.training import recalibrate_batch_norm


def _net(dropout=0.0):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    if dropout:
        x = keras.layers.SpatialDropout2D(dropout, name="drop")(x)
    x = keras.layers.Conv2D(5, 3, padding="same", name="c2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    return keras.Model(inputs, x)


def _images(n=12, seed=0):
    # Offset and scaled so that the initial statistics (0, 1) are far off.
    return (np.random.default_rng(seed).normal(size=(n, 8, 8, 3)) * 3.0 + 2.0).astype("float32")


def test_population_statistics_of_the_first_layer():
    model = _net()
    images = _images()
    conv = model.get_layer("c1")(images).numpy().reshape(-1, 4)
    batches = [(images[i:i + 4], np.zeros((4, 8, 8), "int32")) for i in range(0, 12, 4)]
    report = recalibrate_batch_norm(model, batches)
    assert report["layers"] == 2 and report["batches"] == 3 and report["images"] == 12
    bn1 = model.get_layer("bn1")
    np.testing.assert_allclose(bn1.moving_mean.numpy(), conv.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn1.moving_variance.numpy(), conv.var(0), rtol=1e-4, atol=1e-5)
    assert report["max_mean_shift"] > 0.1
    assert bn1.momentum == 0.99


def test_inference_matches_training_mode_on_the_calibration_batch():
    model = _net()
    images = _images()
    before = np.abs(model(images, training=False).numpy() - model(images, training=True).numpy()).max()
    recalibrate_batch_norm(model, [images])  # one batch: population statistics = batch statistics, every layer
    after = np.abs(model(images, training=False).numpy() - model(images, training=True).numpy()).max()
    assert before > 0.5
    assert after < 1e-3


def test_dropout_is_off_while_measuring_and_restored():
    images = _images()
    reference = _net()
    recalibrate_batch_norm(reference, [images])
    model = _net(dropout=0.5)
    for name in ("c1", "bn1", "c2", "bn2"):
        model.get_layer(name).set_weights(_net().get_layer(name).get_weights())
    weights = [w.copy() for w in model.get_weights()]
    recalibrate_batch_norm(model, [images])
    # With dropout active the second batch norm would see half its channels zeroed.
    np.testing.assert_allclose(model.get_layer("bn2").moving_mean.numpy(),
                               reference.get_layer("bn2").moving_mean.numpy(), rtol=1e-4, atol=1e-5)
    assert model.get_layer("drop").rate == 0.5
    for before, after, w in zip(weights, model.get_weights(), model.weights):
        if "moving" not in w.path:
            np.testing.assert_array_equal(before, after)


def test_frozen_batch_norms_and_steps():
    model = _net()
    model.get_layer("bn1").trainable = False
    report = recalibrate_batch_norm(model, (images for images in [_images(4, s) for s in range(5)]), steps=2)
    assert report["layers"] == 1 and report["batches"] == 2 and report["images"] == 8
    np.testing.assert_array_equal(model.get_layer("bn1").moving_mean.numpy(), np.zeros(4))


@pytest.mark.parametrize("steps", [0, -1, 1.5, True])
def test_bad_steps(steps):
    with pytest.raises(ValueError, match=r"Expected steps to be a positive integer or None. Received: steps="):
        recalibrate_batch_norm(_net(), [_images()], steps=steps)


def test_empty_data_keeps_the_statistics():
    model = _net()
    with pytest.raises(ValueError, match="Expected data to yield at least one batch"):
        recalibrate_batch_norm(model, [])
    bn1 = model.get_layer("bn1")
    assert bn1.momentum == 0.99
    np.testing.assert_array_equal(bn1.moving_variance.numpy(), np.ones(4))
