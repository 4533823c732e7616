"""Every dataset format each tool offers, run on the tiny on-disk layouts of `tests.dataset_fixtures`.

The tools share `kerasseg.data.load_dataset` / `dataset_classes` and `kerasseg.export.datasets.export_data`; a tool
that read one format's files whatever ``--dataset`` said (``classes.json`` of the folder layout) failed on every
public dataset, so each (tool, format) pair is run here end to end, in-process and on a model of a few weights.
"""

import json
import os

import numpy as np
import pytest

from tests import dataset_fixtures as fx

from tests.paths import ROOT  # noqa: E402

# format -> (fixture writer, splits used by the tools: (train, val)).
FORMATS = {
    "folder": (fx.folder, ("train", "val")),
    "camvid": (fx.camvid, ("train", "val")),
    "cityscapes": (fx.cityscapes, ("train", "val")),
    "voc": (fx.voc, ("train", "val")),
    "ade20k": (fx.ade20k, ("train", "val")),
}


def _import_tool(name):
    import importlib

    return importlib.import_module(f"kerasseg.cli.{name}")


def _tiny_model(num_classes, input_shape=(8, 12, 3)):
    """A two-layer network with the metadata a kerasseg model carries."""
    import keras

    from kerasseg.preprocessing import ModelMetadata

    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="features")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(num_classes, 1, name="logits")(x), name="tiny_format_net")
    model.kerasseg_metadata = ModelMetadata.for_model(model, "tiny_format_net")
    return model


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Each format on disk (the synthetic one generated), with its class list and a tiny saved model of its size."""
    import kerasseg
    from kerasseg import data as ksdata
    from kerasseg.data import synthetic

    base = tmp_path_factory.mktemp("formats")
    out = {}
    for name, (write, _) in FORMATS.items():
        root = write(str(base / name))
        out[name] = root
    out["synthetic"] = str(synthetic.write_dataset(str(base / "synthetic"), num_train=2, num_val=2, height=32,
                                                   width=32, seed=0))
    models = {}
    for name, root in out.items():
        classes = ksdata.dataset_classes(name, root, "val")
        models[name] = kerasseg.save_model(_tiny_model(classes.num_classes), str(base / f"{name}.keras"))
    return {"roots": out, "models": models, "base": base}


ALL_FORMATS = ["folder", "synthetic", "camvid", "cityscapes", "voc", "ade20k"]


def test_tools_offer_every_dataset_format():
    from kerasseg.data import DATASET_FORMATS

    assert sorted(ALL_FORMATS) == sorted(DATASET_FORMATS)
    for tool in ("evaluate", "export_tflite", "parity", "package_pretrained", "train"):
        parser = _import_tool(tool).build_parser()
        action = next(a for a in parser._actions if "--dataset" in a.option_strings)
        assert sorted(action.choices) == sorted(DATASET_FORMATS), tool


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_evaluate_tool_reads_each_format(datasets, fmt, tmp_path, capsys):
    from kerasseg import data as ksdata

    root = datasets["roots"][fmt]
    tool = _import_tool("evaluate")
    rc = tool.main([datasets["models"][fmt], "--dataset", fmt, "--data-dir", root, "--split", "val",
                    "--output-dir", str(tmp_path), "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    classes = ksdata.dataset_classes(fmt, root, "val")
    assert [c["name"] for c in metrics["classes"]] == list(classes.names)
    expected_images = sum(1 for _ in ksdata.load_dataset(fmt, root, "val", batch_size=1, shuffle=False))
    assert metrics["num_images"] == expected_images
    # Ignored pixels stay out of the counts: the confusion matrix holds exactly the labelled pixels of the split.
    labelled = sum(int((np.asarray(y) != 255).sum())
                   for _, y in ksdata.load_dataset(fmt, root, "val", batch_size=1, shuffle=False))
    assert int(np.asarray(metrics["confusion_matrix"]).sum()) == labelled


def test_evaluate_tool_names_the_dataset_whose_classes_differ(datasets, tmp_path, capsys):
    tool = _import_tool("evaluate")
    rc = tool.main([datasets["models"]["folder"], "--dataset", "camvid", "--data-dir", datasets["roots"]["camvid"],
                    "--output-dir", str(tmp_path), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "model's 3 classes" in err and "11 classes in --dataset camvid" in err


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_export_data_of_each_format(datasets, fmt):
    """The data path of tools/export_tflite.py, parity.py, package_pretrained.py and qat.py."""
    import kerasseg
    from kerasseg import data as ksdata
    from kerasseg.export.datasets import export_data

    root = datasets["roots"][fmt]
    model = kerasseg.load_model(datasets["models"][fmt])
    metadata, calibration, val = export_data(model, fmt, root)
    classes = ksdata.dataset_classes(fmt, root, "val")
    assert metadata.class_names == list(classes.names) and metadata.ignore_label == classes.ignore_label
    image, label = next(iter(calibration))
    assert image.shape[0] == 1 and image.shape[-1] == 3 and label.shape == image.shape[:3]
    assert sum(1 for _ in val) == sum(1 for _ in ksdata.load_dataset(fmt, root, "val", batch_size=1))


@pytest.fixture(scope="module")
def tiny_registered():
    from kerasseg import registry

    name = "test_tiny_format_net"
    registry.register_model(name)(lambda num_classes, input_shape=(8, 12, 3): _tiny_model(num_classes, input_shape))
    yield name
    registry._REGISTRY.pop(name)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_train_tool_on_each_format(datasets, tiny_registered, fmt, tmp_path):
    train = _import_tool("train")
    out = tmp_path / "run"
    # The synthetic format is generated by the tool itself, at the training input size.
    data = str(tmp_path / "synthetic") if fmt == "synthetic" else datasets["roots"][fmt]
    size = ["--input-size", "32x32", "--num-train", "2", "--num-val", "1"] if fmt == "synthetic" else [
        "--input-size", "8x12"]
    rc = train.main(["--model", tiny_registered, "--dataset", fmt, "--data-dir", data, "--output-dir", str(out),
                     *size, "--epochs", "1", "--batch-size", "1", "--steps-per-epoch", "1", "--backup-freq", "none",
                     "--verbose", "0"])
    assert rc == 0
    meta = json.loads(__import__("zipfile").ZipFile(out / "final.keras").read("kerasseg.json"))
    assert meta["extra"]["training"]["dataset"] == fmt
