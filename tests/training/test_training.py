"""Training options: config files and flags, class weights, losses, auxiliary outputs, NaN handling, TensorBoard,
transfer learning."""

import json
import os

import numpy as np
import pytest

from kerasseg.data.class_weights import class_frequencies, compute_class_weights, resolve_class_weights
from kerasseg.training import TrainConfig, config_from_dict, load_config_file


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    from kerasseg.data.synthetic import write_dataset

    return write_dataset(tmp_path_factory.mktemp("tiny") / "data", num_train=4, num_val=2, height=32, width=64,
                         seed=0)


@pytest.fixture()
def tiny_aux_model():
    """A registered two-output model (logits + auxiliary logits), small enough to train in seconds."""
    import keras

    from kerasseg import registry

    name = "test_tiny_aux"

    @registry.register_model(name, normalization="imagenet")
    def tiny_aux(num_classes, input_shape=(32, 64, 3)):
        inputs = keras.Input(input_shape, name="image")
        x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="layer01_conv")(inputs)
        x = keras.layers.BatchNormalization(name="layer01_bn")(x)
        logits = keras.layers.Conv2D(num_classes, 1, name="logits")(x)
        aux = keras.layers.Conv2D(num_classes, 1, name="aux_logits")(x)
        return keras.Model(inputs, [logits, aux], name=name)

    yield name
    registry._REGISTRY.pop(name)


# ------------------------------------------------------------------------------------------------ class weights

def test_class_weights_match_the_formulas(tiny_root):
    pixels, image_pixels = class_frequencies(tiny_root)
    assert pixels.sum() > 0 and np.all(image_pixels >= pixels)
    present = pixels > 0
    freq = pixels[present] / image_pixels[present]
    median = compute_class_weights(tiny_root, "median")
    np.testing.assert_allclose(np.asarray(median)[present], np.median(freq) / freq, rtol=1e-9)
    enet = compute_class_weights(tiny_root, "enet")
    np.testing.assert_allclose(np.asarray(enet)[present], 1 / np.log(1.02 + pixels[present] / pixels.sum()),
                               rtol=1e-9)
    # rarer classes weigh more
    order = np.argsort(pixels[present])
    assert np.asarray(enet)[present][order[0]] > np.asarray(enet)[present][order[-1]]


def test_resolve_class_weights_sources_and_errors(tiny_root, tmp_path):
    from kerasseg.data.folder import read_classes

    n = read_classes(tiny_root).num_classes
    assert resolve_class_weights(None, tiny_root, n) is None
    assert resolve_class_weights("none", tiny_root, n) is None
    path = tmp_path / "w.json"
    path.write_text(json.dumps(list(range(n))))
    assert resolve_class_weights(str(path), tiny_root, n) == [float(i) for i in range(n)]
    with pytest.raises(ValueError, match="no such file"):
        resolve_class_weights(str(tmp_path / "missing.json"), tiny_root, n)
    with pytest.raises(ValueError, match=f"Expected {n} class weights"):
        resolve_class_weights([1.0, 2.0], tiny_root, n)
    with pytest.raises(ValueError, match="non-negative"):
        resolve_class_weights([-1.0] * n, tiny_root, n)
    with pytest.raises(ValueError, match="method"):
        compute_class_weights(tiny_root, "inverse")


# ------------------------------------------------------------------------------------------------ configuration

def test_yaml_config_and_flag_override(tmp_path):
    from kerasseg.cli.train import resolve_config

    path = tmp_path / "run.yaml"
    path.write_text("model: erfnet\ninput-size: 32x64\nepochs: 7\nloss: ce+0.5*lovasz\nclass_weights: median\n"
                    "optimizer: sgd\nmodel_kwargs: {dropout: 0.0}\n")
    cfg = resolve_config(["--config", str(path), "--epochs", "2", "--deterministic"])
    assert cfg.epochs == 2 and cfg.input_size == (32, 64) and cfg.loss == "ce+0.5*lovasz"
    assert cfg.class_weights == "median" and cfg.optimizer == "sgd" and cfg.deterministic is True
    assert cfg.model_kwargs == {"dropout": 0.0} and cfg.lr == TrainConfig().lr
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    with pytest.raises(ValueError, match="Unknown training option.*epochz"):
        load_config_file(bad)
    with pytest.raises(SystemExit, match="backup_freq"):
        resolve_config(["--config", str(path), "--momentum", "0.5", "--strategy", "none", "--backup-freq", "x"])


@pytest.mark.parametrize("values, match", [
    ({"optimizer": "rmsprop"}, "optimizer"),
    ({"strategy": "tpu"}, "strategy"),
    ({"backup_freq": -2}, "backup_freq"),
    ({"aux_weight": -1}, "aux_weight"),
    ({"unfreeze_at_epoch": 2}, "freeze_encoder"),
    ({"init_from": "/nonexistent/x.keras"}, "init_from"),
    ({"epochs": 0}, "epochs"),
    ({"dataset": "kitti"}, "dataset"),
    ({"scale_range": [2.0, 1.0]}, "scale_range"),
    ({"scale_range": "big"}, "scale_range"),
    ({"augment": False, "photometric": True}, "photometric"),
    ({"val_split": ""}, "val_split"),
])
def test_config_validation_names_the_option(values, match):
    with pytest.raises(ValueError, match=match):
        config_from_dict(values).validate()


# ------------------------------------------------------------------------------------------------ training runs

def test_aux_output_loss_weights_tensorboard_and_inference_checkpoint(tiny_root, tiny_aux_model, tmp_path):
    import kerasseg
    from kerasseg.training import train

    out = tmp_path / "run"
    result = train(TrainConfig(model=tiny_aux_model, dataset="folder", data_dir=tiny_root, output_dir=str(out),
                               input_size=(32, 64), epochs=2, batch_size=2, lr=1e-2, verbose=0, aux_weight=0.4,
                               loss="ce+0.5*dice", class_weights="enet", optimizer="sgd", tensorboard=True,
                               tensorboard_images=2, backup_freq="none"))
    assert result["best_epoch"] in (1, 2) and len(result["history"]) == 2
    logs = result["history"][-1]
    # per-output losses are logged, the metric is on the main output only
    assert {"logits_loss", "aux_logits_loss", "val_miou", "learning_rate"} <= set(logs)
    assert not any(k.startswith("aux_logits_miou") for k in logs)
    assert len(result["class_weights"]) == result["num_classes"]
    for path in (result["best_path"], result["final_path"]):
        model = kerasseg.load_model(path)
        assert len(model.outputs) == 1 and model.outputs[0].shape[-1] == result["num_classes"]
        assert "aux_logits" not in [layer.name for layer in model.layers]
    saved = json.loads((out / "config.json").read_text())
    assert saved["loss"] == "ce+0.5*dice" and saved["aux_weight"] == 0.4
    events = os.listdir(out / "tensorboard" / "validation")
    assert events and (out / "tensorboard" / "train").is_dir()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard" / "validation"), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    names = set(tags.get("tensors", [])) | set(tags.get("images", [])) | set(tags.get("scalars", []))
    assert any(t.startswith("val_overlay") for t in names)
    assert any(t.startswith("val_iou/") for t in names)


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tiny_root, tiny_aux_model, tmp_path):
    import keras

    from kerasseg.training import TrainingDivergedError, train

    class Poison(keras.callbacks.Callback):
        """Turns the weights into NaN in the second epoch, as an exploding update would."""

        def on_train_batch_begin(self, batch, logs=None):
            if getattr(self, "epoch", 0) == 1:
                layer = self.model.get_layer("logits")
                layer.set_weights([np.full_like(w, np.nan) for w in layer.get_weights()])

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

    out = tmp_path / "nan"
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at epoch 2, step 1.*kept .*best\.keras"):
        train(TrainConfig(model=tiny_aux_model, dataset="folder", data_dir=tiny_root, output_dir=str(out),
                          input_size=(32, 64), epochs=3, batch_size=2, verbose=0, backup_freq="epoch"),
              callbacks=[Poison()])
    assert not (out / "final.keras").exists()
    import kerasseg

    best = kerasseg.load_model(out / "best.keras")  # the epoch-1 model, not the poisoned one
    assert all(np.isfinite(w).all() for w in best.get_weights())
    assert (out / "backup" / "training_metadata.json").is_file()
    assert json.loads((out / "backup" / "training_metadata.json").read_text())["epoch"] == 1


# ------------------------------------------------------------------------------------------------ transfer learning

def test_encoder_layers_and_copy_weights(tmp_path):
    import kerasseg
    from kerasseg.saving import save_model
    from kerasseg.training import copy_weights, encoder_layers

    source = kerasseg.build_model("erfnet", num_classes=5, input_shape=(32, 64, 3))
    names = {layer.name.split("_")[0] for layer in encoder_layers(source)}
    assert names == {f"layer{i:02d}" for i in range(1, 17)}
    path = save_model(source, str(tmp_path / "src.keras"))
    target = kerasseg.build_model("erfnet", num_classes=3, input_shape=(32, 64, 3))
    report = copy_weights(path, target)
    assert "layer01_conv" in report["copied"] and report["shape_mismatch"] == ["logits"]
    np.testing.assert_array_equal(target.get_layer("layer05_conv3x1_1").get_weights()[0],
                                  source.get_layer("layer05_conv3x1_1").get_weights()[0])
    import keras

    plain = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(2, 1, name="head")])
    with pytest.raises(ValueError, match="recognised encoder"):
        encoder_layers(plain)


def test_init_from_freeze_unfreeze_and_mixed_precision(tiny_root, tiny_aux_model, tmp_path):
    import keras

    import kerasseg
    from kerasseg.saving import save_model
    from kerasseg.training import train

    source = kerasseg.build_model(tiny_aux_model, num_classes=3, input_shape=(32, 64, 3))
    marker = np.full_like(source.get_layer("layer01_conv").get_weights()[0], 0.01)
    source.get_layer("layer01_conv").set_weights([marker, source.get_layer("layer01_conv").get_weights()[1]])
    ckpt = save_model(source, str(tmp_path / "source.keras"))

    class Record(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.seen = [self.model.get_layer("layer01_conv").get_weights()[0].copy()]

        def on_epoch_end(self, epoch, logs=None):
            self.seen.append(self.model.get_layer("layer01_conv").get_weights()[0].copy())

    record = Record()
    result = train(TrainConfig(model=tiny_aux_model, dataset="folder", data_dir=tiny_root,
                               output_dir=str(tmp_path / "ft"), input_size=(32, 64), epochs=2, batch_size=2, lr=1e-2,
                               verbose=0, backup_freq="none", init_from=ckpt, freeze_encoder=True,
                               unfreeze_at_epoch=2, mixed_precision=True), callbacks=[record])
    report = result["transfer"]
    # 3 source classes vs the dataset's classes: the classifiers have other shapes and stay new
    assert "layer01_conv" in report["copied"] and "logits" in report["shape_mismatch"]
    np.testing.assert_array_equal(record.seen[0], marker)  # copied
    np.testing.assert_array_equal(record.seen[1], marker)  # frozen during epoch 1
    assert not np.array_equal(record.seen[2], marker)  # trained in epoch 2
    assert keras.mixed_precision.global_policy().name == "float32"  # the run restores the policy
    model = kerasseg.load_model(result["final_path"])
    assert model.outputs[0].dtype == "float32" and model.get_layer("layer01_conv").dtype_policy.name == \
        "mixed_float16"


# ------------------------------------------------------------------------------------------------ crops vs frames

def _camvid_like(root, h=32, w=48):
    """The SegNet CamVid layout with frames of h x w: 4 train / 2 val, labels 0..10 in bands plus void (11)."""
    from tests.dataset_fixtures import image, save_index, save_rgb

    for split, n in (("train", 4), ("val", 2)):
        for k in range(n):
            name = f"0001TP_{split}{k:03d}.png"
            labels = (np.arange(w)[None, :] // 4 + k + np.zeros((h, 1), int)) % 12
            save_rgb(os.path.join(root, split, name), image(10 * k + len(split), h, w))
            save_index(os.path.join(root, split + "annot", name), labels)
    return str(root)


def test_training_on_crops_validates_and_saves_at_the_full_frame(tiny_aux_model, tmp_path):
    import kerasseg
    from kerasseg import data as ksdata
    from kerasseg.evaluation import evaluate, keras_predict_fn
    from kerasseg.training import train

    root = _camvid_like(tmp_path / "camvid")
    out = tmp_path / "run"
    result = train(TrainConfig(model=tiny_aux_model, dataset="camvid", data_dir=root, output_dir=str(out),
                               input_size=(32, 48), crop_size=(16, 24), scale_range=(0.75, 1.25),
                               photometric=True, cache=True, epochs=2, batch_size=2, lr=1e-2, verbose=0,
                               class_weights="median", backup_freq="none"))
    assert result["num_classes"] == 11 and len(result["class_weights"]) == 11
    # the median-frequency weights of the CamVid labels, void excluded
    assert result["class_weights"] == pytest.approx(compute_class_weights(root, "median", format="camvid"))
    logs = result["history"][-1]
    assert {"val_miou", "val_pixel_accuracy", "learning_rate"} <= set(logs)
    final = kerasseg.load_model(result["final_path"])
    assert tuple(final.inputs[0].shape) == (None, 32, 48, 3) and len(final.outputs) == 1
    assert final.kerasseg_metadata.input_shape == [32, 48, 3]
    assert final.kerasseg_metadata.class_names[0] == "sky"
    # the logged figure is the full-frame mIoU of the saved model
    val = ksdata.load_dataset("camvid", root, "val", batch_size=1, normalization=final)
    full = evaluate(keras_predict_fn(final), val, num_classes=11)
    assert logs["val_miou"] == pytest.approx(full.miou, abs=1e-6)
    assert kerasseg.load_model(result["best_path"]).inputs[0].shape[1:3] == (32, 48)
    saved = json.loads((out / "config.json").read_text())
    assert saved["crop_size"] == [16, 24] and saved["scale_range"] == [0.75, 1.25]


def test_copy_model_weights_names_the_mismatch():
    import keras

    from kerasseg.training.callbacks import copy_model_weights

    def dense_model(size):
        inputs = keras.Input((size, size, 1))
        return keras.Model(inputs, keras.layers.Dense(2, name="head")(keras.layers.Flatten()(inputs)))

    a, b, c = dense_model(4), dense_model(4), dense_model(6)
    a.get_layer("head").kernel.assign(np.ones((16, 2), np.float32))
    copy_model_weights(a, b)
    np.testing.assert_array_equal(b.get_layer("head").kernel.numpy(), np.ones((16, 2)))
    with pytest.raises(ValueError, match="head.*depends on its input size"):
        copy_model_weights(a, c)


def test_poly_decay_is_keras_polynomial_decay_after_the_warm_up():
    import keras
    import numpy as np

    from kerasseg.training import NaNGuard, PolyDecay

    schedule = PolyDecay(0.01, decay_steps=100, power=0.9, warmup_steps=10, warmup_start=0.1)
    keras_poly = keras.optimizers.schedules.PolynomialDecay(0.01, 100, end_learning_rate=0.0, power=0.9)
    after = [float(schedule(s)) for s in (10, 50, 99, 100, 150)]
    np.testing.assert_allclose(after, [float(keras_poly(s)) for s in (10, 50, 99, 100, 150)], rtol=0, atol=0)
    np.testing.assert_allclose(float(schedule(0)), 0.1 * float(keras_poly(0)), rtol=1e-6)
    np.testing.assert_allclose(float(schedule(5)), 0.55 * float(keras_poly(5)), rtol=1e-6)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert restored.get_config() == schedule.get_config()
    assert issubclass(NaNGuard, keras.callbacks.TerminateOnNaN)
