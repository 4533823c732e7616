import numpy as np
import pytest

import kerasseg
from kerasseg.losses import SparseCategoricalCrossentropyIgnore
from kerasseg.models.erfnet import ERFNET_LAYERS

# The paper's table at 1024x512 (W x H): (channels, height, width) after each of the 23 layers.
TABLE = ([(16, 256, 512), (64, 128, 256)] + [(64, 128, 256)] * 5 + [(128, 64, 128)] * 9
         + [(64, 128, 256)] * 3 + [(16, 256, 512)] * 3 + [(19, 512, 1024)])


@pytest.fixture(scope="module")
def full_erfnet():
    return kerasseg.build_model("erfnet", num_classes=19, input_shape=(512, 1024, 3))


def _count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_trainable_parameters_match_authors_implementation(full_erfnet):
    assert _count(full_erfnet) == 2_064_191


def test_table_has_23_layers_and_shapes_match(full_erfnet):
    assert len(ERFNET_LAYERS) == len(TABLE) == 23
    for i, (c, h, w) in enumerate(TABLE, start=1):
        name = "logits" if i == 23 else f"layer{i:02d}_out"
        assert tuple(full_erfnet.get_layer(name).output.shape[1:]) == (h, w, c), name


def test_dilations_follow_the_paper(full_erfnet):
    rates = [full_erfnet.get_layer(f"layer{i:02d}_conv3x1_2").dilation_rate[0] for i in range(9, 17)]
    assert rates == [2, 4, 8, 16, 2, 4, 8, 16]
    assert full_erfnet.get_layer("layer09_conv1x3_2").dilation_rate == (1, 2)
    assert full_erfnet.get_layer("layer03_dropout").rate == pytest.approx(0.03)
    assert full_erfnet.get_layer("layer09_dropout").rate == pytest.approx(0.3)
    assert all(full_erfnet.get_layer(f"layer{i:02d}_bn").epsilon == pytest.approx(1e-3) for i in (1, 2, 8, 17))


@pytest.mark.parametrize("shape", [(60, 64, 3), (64, 100, 3), (64, 64)])
def test_input_not_multiple_of_8_is_rejected(shape):
    with pytest.raises(ValueError, match=r"Expected .* Received: input_shape="):
        kerasseg.build_model("erfnet", num_classes=3, input_shape=shape)


@pytest.mark.parametrize("kwargs", [{"num_classes": 0}, {"num_classes": 2.5}, {"num_classes": 3, "dropout": 1.5}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="Expected .* Received"):
        kerasseg.build_model("erfnet", input_shape=(32, 32, 3), **kwargs)


def test_fit_steps_decrease_loss_on_a_fixed_batch():
    import keras

    keras.utils.set_random_seed(1)
    model = kerasseg.build_model("erfnet", num_classes=3, input_shape=(32, 64, 3), dropout=0.0, early_dropout=0.0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 32, 64, 3)).astype("float32")
    y = (x[..., 0] > 0).astype("int32") + (x[..., 1] > 1).astype("int32")
    y[:, :2] = 255
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=SparseCategoricalCrossentropyIgnore())
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=8, batch_size=2, verbose=0)
    assert model.evaluate(x, y, verbose=0) < first


def test_keras_roundtrip_safe_mode_identical(tmp_path):
    model = kerasseg.build_model("erfnet", num_classes=4, input_shape=(32, 64, 3))
    path = kerasseg.save_model(model, tmp_path / "m.keras")
    loaded = kerasseg.load_model(path)
    x = np.random.default_rng(0).normal(size=(1, 32, 64, 3)).astype("float32")
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    assert loaded.kerasseg_metadata == model.kerasseg_metadata


def test_tf_keras_builds_the_same_graph():
    import tf_keras

    a = kerasseg.models.erfnet.erfnet(5, input_shape=(32, 64, 3))
    b = kerasseg.models.erfnet.erfnet(5, input_shape=(32, 64, 3), keras_module=tf_keras)
    assert isinstance(b, tf_keras.Model)
    assert [w.shape for w in a.get_weights()] == [w.shape for w in b.get_weights()]
    b.set_weights(a.get_weights())
    x = np.random.default_rng(0).normal(size=(1, 32, 64, 3)).astype("float32")
    np.testing.assert_allclose(a.predict(x, verbose=0), b.predict(x, verbose=0), atol=1e-4)
