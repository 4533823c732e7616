"""The per-architecture matrix: every registered model is held to the same contract."""

import keras
import numpy as np
import pytest

import kerasseg
from kerasseg.analysis import count_params
from kerasseg.losses import SparseCategoricalCrossentropyIgnore
from tests.model_cases import CASES, EDGE_UNFRIENDLY, fp32_export, free_keras_memory  # noqa: F401 (autouse fixture)

MODELS = kerasseg.list_models()


def _small(name):
    kwargs = dict(CASES[name]["kwargs"])
    return kerasseg.build_model(name, **kwargs), kwargs


def _inputs(kwargs, batch=1, seed=0):
    h, w, c = kwargs["input_shape"]
    return np.random.default_rng(seed).normal(size=(batch, h, w, c)).astype("float32")


def test_every_registered_model_has_a_test_case():
    assert sorted(CASES) == MODELS


@pytest.mark.parametrize("name", MODELS)
def test_output_shape(name):
    model, kwargs = _small(name)
    out = model.predict(_inputs(kwargs, batch=2), verbose=0)
    h, w = CASES[name].get("out_hw", kwargs["input_shape"][:2])
    assert out.shape == (2, h, w, kwargs["num_classes"])
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("name", MODELS)
def test_trainable_parameters_match_reference(name):
    for kwargs, expected in CASES[name]["params"]:
        model = kerasseg.build_model(name, **kwargs)
        assert count_params(model) == expected, (name, kwargs)
        del model
        keras.backend.clear_session()


@pytest.mark.parametrize("name", MODELS)
def test_bad_arguments_have_clear_messages(name):
    with pytest.raises(ValueError, match=r"Expected .*Received: num_classes=0"):
        kerasseg.build_model(name, num_classes=0, input_shape=CASES[name]["kwargs"]["input_shape"])
    with pytest.raises(ValueError, match=r"Expected .*Received: input_shape="):
        kerasseg.build_model(name, num_classes=3, input_shape=(37, 41, 3))


@pytest.mark.parametrize("name", MODELS)
def test_keras_roundtrip_safe_mode(name, tmp_path):
    model, kwargs = _small(name)
    x = _inputs(kwargs)
    path = kerasseg.save_model(model, tmp_path / f"{name}.keras")
    loaded = kerasseg.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    assert loaded.kerasseg_metadata.model_name == name


@pytest.mark.parametrize("name", MODELS)
def test_one_fit_step(name):
    model, kwargs = _small(name)
    x = _inputs(kwargs, batch=2)
    h, w = CASES[name].get("out_hw", kwargs["input_shape"][:2])
    y = np.random.default_rng(1).integers(0, kwargs["num_classes"], size=(2, h, w)).astype("int32")
    y[:, 0, :] = 255
    before = [v.numpy().copy() for v in model.trainable_variables]
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss=SparseCategoricalCrossentropyIgnore())
    history = model.fit(x, y, epochs=1, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = [not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables)]
    assert sum(changed) >= 0.9 * len(changed)


@pytest.mark.parametrize("name", MODELS)
def test_fp32_tflite_builtin_ops_only(name, tmp_path):
    from kerasseg.export import tflite_ops

    ops = tflite_ops(fp32_export(name, tmp_path))
    assert not [op for op in ops if op.startswith("Flex") or op == "CUSTOM"], ops
    assert not EDGE_UNFRIENDLY & set(ops), ops
