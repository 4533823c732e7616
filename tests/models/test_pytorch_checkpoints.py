"""PyTorch checkpoints without torch: the safe reader, `load_pytorch_weights`, and the EfficientNet-Lite0 backbone.

The golden data in ``tests/data/torch`` was produced once by the reference implementations (the ERFNet authors'
``Net`` and ``efficientnet_lite_pytorch``) with ``tools/make_torch_golden.py``; torch never enters this environment.
"""

import gc
import json
import os
import pickle
import zipfile

import keras
import numpy as np
import pytest

import kerasseg
from kerasseg.backbones import ENDPOINTS, build_backbone, load_backbone_weights
from kerasseg.backbones.weights import imagenet_checkpoint_path
from kerasseg.preprocessing import normalization_constants
from kerasseg.torch_checkpoint import (CheckpointFormatError, UnsafeCheckpointError, read_torch_checkpoint,
                                       state_dict_of)

from torch_golden import (DATA_DIR, ERFNET_INPUT_NCHW, ERFNET_NUM_CLASSES, LITE0_INPUT_NCHW, golden_input,
                          pickle_ops, random_state_dict, write_torch_zip)

# Max |Δ| allowed, as a fraction of the reference output's largest magnitude.
TOLERANCE = 1e-4


@pytest.fixture(scope="module", autouse=True)
def _free_memory():
    yield
    keras.backend.clear_session()
    gc.collect()


def _relative_error(ours, ref):
    return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


def _nhwc(x):
    return x.transpose(0, 2, 3, 1)


# --- the safe reader -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_reader_returns_the_tensors_torch_saved(fmt):
    expected = np.load(os.path.join(DATA_DIR, "tiny_expected.npz"))
    checkpoint = read_torch_checkpoint(os.path.join(DATA_DIR, f"tiny_{fmt}.pth"))
    assert checkpoint["epoch"] == 3 and checkpoint["note"] == b"bytes"
    state = state_dict_of(checkpoint)
    assert len(state) == len(expected.files)
    for name, value in state.items():
        want = expected[name.replace(".", "__")]
        assert value.dtype == want.dtype and value.shape == want.shape, name
        np.testing.assert_array_equal(value, want, err_msg=name)
    # Views keep their own values although they share a storage: a transposed tensor, a row with an offset.
    np.testing.assert_array_equal(state["module.transposed"], state["module.base"].T)
    np.testing.assert_array_equal(state["module.row"], state["module.base"][2])


def test_reader_takes_gpu_tensors_of_torch_0_3_legacy_files(tmp_path):
    # torch < 0.4 saved CUDA tensors as torch.cuda.FloatStorage rebuilt by _rebuild_tensor (4 arguments); written
    # here opcode by opcode, since no installable torch writes that format any more.
    weight = np.arange(12, dtype=np.float32).reshape(3, 4)
    main = (b"\x80\x02}(" + pickle_ops("module.conv.weight") + b"ctorch._utils\n_rebuild_tensor\n("
            + b"(" + pickle_ops("storage") + b"ctorch.cuda\nFloatStorage\n" + pickle_ops("94001") + pickle_ops("cuda:0")
            + pickle_ops(12) + b"NtQ" + pickle_ops(0) + pickle_ops((4, 3)) + pickle_ops((1, 4)) + b"tRu.")
    path = tmp_path / "erfnet_old.pth"
    path.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2)
                     + pickle.dumps({"little_endian": True}, protocol=2) + main
                     + pickle.dumps(["94001"], protocol=2) + np.int64(12).tobytes() + weight.tobytes())
    state = read_torch_checkpoint(path)
    np.testing.assert_array_equal(state["module.conv.weight"], weight.T)


class _RunsCode:
    # What an attacker pickles: unpickling it calls os.system(command).
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _zip_checkpoint(path, payload: bytes):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/version", "3\n")


def test_malicious_pickles_are_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"weight": _RunsCode(f"touch {marker}")}, protocol=2)
    zipped = tmp_path / "evil_zip.pth"
    _zip_checkpoint(zipped, evil)
    legacy = tmp_path / "evil_legacy.pth"
    legacy.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2)
                       + pickle.dumps({"little_endian": True}, protocol=2) + evil)
    for path in (zipped, legacy):
        with pytest.raises(UnsafeCheckpointError, match=r"asks for the global (posix|os)\.system.*Nothing from the "
                                                        r"file was executed"):
            read_torch_checkpoint(path)
        with pytest.raises(UnsafeCheckpointError):
            kerasseg.load_pytorch_weights(keras.Sequential([keras.Input((4,))]), str(path))
    assert not marker.exists()
    # Any other global is refused too, however harmless it looks.
    _zip_checkpoint(zipped, pickle.dumps({"shape": np.float32(1.0)}, protocol=2))
    with pytest.raises(UnsafeCheckpointError, match=r"numpy"):
        read_torch_checkpoint(zipped)


def test_damaged_and_foreign_files_get_clear_errors(tmp_path):
    for fmt in ("zip", "legacy"):
        data = open(os.path.join(DATA_DIR, f"tiny_{fmt}.pth"), "rb").read()
        cut = tmp_path / f"truncated_{fmt}.pth"
        cut.write_bytes(data[: len(data) * 2 // 3])
        with pytest.raises(CheckpointFormatError, match=r"(complete|truncated)"):
            read_torch_checkpoint(cut)
    other = tmp_path / "weights.h5"
    other.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    with pytest.raises(CheckpointFormatError, match=r"Expected a PyTorch checkpoint .*Received: .*weights.h5"):
        read_torch_checkpoint(other)
    with pytest.raises(FileNotFoundError, match=r"Received: path='.*missing.pth'"):
        read_torch_checkpoint(tmp_path / "missing.pth")
    with pytest.raises(CheckpointFormatError, match=r"Expected .* to hold a state dict"):
        state_dict_of({"epoch": 3})


# --- ERFNet in the authors' layout -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def erfnet_golden():
    data = np.load(os.path.join(DATA_DIR, "erfnet_golden.npz"))
    spec = json.loads(str(data["spec"]))
    # Saved from nn.DataParallel, as the authors' checkpoints are.
    state = {f"module.{k}": v for k, v in random_state_dict(spec).items()}
    return state, data["output"]


def _erfnet(num_classes=ERFNET_NUM_CLASSES, **kwargs):
    _, _, h, w = ERFNET_INPUT_NCHW
    return kerasseg.build_model("erfnet", num_classes, (h, w, 3), **kwargs)


def test_erfnet_computes_the_reference_function(erfnet_golden):
    state, reference = erfnet_golden
    model = _erfnet(torch_padding=True)
    report = kerasseg.load_pytorch_weights(model, state)
    assert report.architecture == "erfnet" and report.missing == [] and report.skipped == {}
    assert len(report.copied) == len([layer for layer in model.layers if layer.weights])
    # The encoder-only classifier has no place in the full network.
    assert report.unexpected == ["encoder.output_conv.bias", "encoder.output_conv.weight"]
    ours = np.asarray(model(_nhwc(golden_input(ERFNET_INPUT_NCHW)), training=False))
    assert _relative_error(ours, _nhwc(reference)) <= TOLERANCE


def test_erfnet_checkpoint_errors(erfnet_golden):
    state, _ = erfnet_golden
    with pytest.raises(ValueError, match=r"Expected an ERFNet built with torch_padding=True"):
        kerasseg.load_pytorch_weights(_erfnet(), state)
    other_classes = _erfnet(num_classes=5, torch_padding=True)
    before = other_classes.get_layer("logits").get_weights()[0].copy()
    with pytest.raises(ValueError, match=r"classifier has 8 classes and the model's 5.*skip_classifier=True"):
        kerasseg.load_pytorch_weights(other_classes, state)
    report = kerasseg.load_pytorch_weights(other_classes, state, skip_classifier=True)
    assert list(report.skipped) == ["logits"]
    np.testing.assert_array_equal(other_classes.get_layer("logits").get_weights()[0], before)
    with pytest.raises(CheckpointFormatError, match=r"Expected a checkpoint of the ERFNet authors' Net .*Received"):
        kerasseg.load_pytorch_weights(other_classes, {"fc.weight": np.zeros((2, 2), np.float32)})
    lite = keras.Model(*_lite0_endpoints((32, 32, 3)))
    with pytest.raises(ValueError, match=r"Expected a kerasseg ERFNet model"):
        kerasseg.load_pytorch_weights(lite, state)


def _import_tool():
    from kerasseg.cli import import_pytorch

    return import_pytorch


def test_import_tool_writes_a_cityscapes_model_from_an_authors_checkpoint(tmp_path, capsys):
    # The authors' Cityscapes checkpoint has 20 classes: the golden spec with a 20-class classifier.
    data = np.load(os.path.join(DATA_DIR, "erfnet_golden.npz"))
    spec = []
    for name, shape, dtype in json.loads(str(data["spec"])):
        if ".output_conv." in name:  # the classifiers: (classes, ...) and the transposed (16, classes, 2, 2)
            shape[1 if name == "decoder.output_conv.weight" else 0] = 20
        spec.append((name, shape, dtype))
    checkpoint = str(tmp_path / "erfnet_pretrained.pth")
    write_torch_zip(checkpoint, {f"module.{k}": v for k, v in random_state_dict(spec, seed=1).items()})
    tool = _import_tool()
    out = str(tmp_path / "erfnet_cityscapes.keras")
    assert tool.main([checkpoint, "--model", "erfnet", "--num-classes", "20", "--input-size", "48x64",
                      "--output", out]) == 0
    model = kerasseg.load_model(out)
    meta = kerasseg.saving.read_metadata(out)
    assert meta.normalization == "unit" and meta.class_names[0] == "road" and meta.class_names[-1] == "void"
    assert len(meta.class_names) == 20 and meta.extra["imported"]["layout"] == "erfnet"
    np.testing.assert_array_equal(model.get_layer("layer09_conv3x1_2").get_weights()[0],
                                  random_state_dict(spec, seed=1)["encoder.layers.7.conv3x1_2.weight"]
                                  .transpose(2, 3, 1, 0))
    # Another class count: a clear refusal offering to skip the classifier, then an import with it skipped.
    assert tool.main([checkpoint, "--model", "erfnet", "--num-classes", "11", "--input-size", "48x64",
                      "--output", str(tmp_path / "other.keras")]) == 1
    assert "--skip-classifier" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "other.keras")
    assert tool.main([checkpoint, "--model", "erfnet", "--num-classes", "11", "--input-size", "48x64",
                      "--skip-classifier", "--output", str(tmp_path / "other.keras")]) == 0
    assert kerasseg.saving.read_metadata(str(tmp_path / "other.keras")).class_names is None


# --- EfficientNet-Lite0 ----------------------------------------------------------------------------------------

def _lite0_endpoints(shape, **kwargs):
    inputs = keras.Input(shape)
    endpoints = build_backbone("efficientnet_lite0", inputs, **kwargs)
    return inputs, {k: endpoints[k] for k in ENDPOINTS}


@pytest.fixture(scope="module")
def lite0_golden():
    return dict(np.load(os.path.join(DATA_DIR, "efficientnet_lite0_golden.npz")))


def test_lite0_imagenet_weights_load_offline_and_match_the_reference(lite0_golden):
    _, _, h, w = LITE0_INPUT_NCHW
    model = keras.Model(*_lite0_endpoints((h, w, 3)))
    report = load_backbone_weights(model, "efficientnet_lite0", "imagenet")
    assert len(report.loaded) == 96 and report.skipped == {} and report.folded_biases == []
    assert report.unused == ["_bn1", "_conv_head", "_fc"]
    ours = model.predict(_nhwc(golden_input(LITE0_INPUT_NCHW)), verbose=0)
    for key, ref in lite0_golden.items():
        assert _relative_error(ours[key], _nhwc(ref)) <= TOLERANCE, key
    # The same file through load_pytorch_weights gives the same weights.
    other = keras.Model(*_lite0_endpoints((h, w, 3)))
    pt_report = kerasseg.load_pytorch_weights(other, imagenet_checkpoint_path("efficientnet_lite0"))
    assert pt_report.architecture == "efficientnet_lite0" and len(pt_report.copied) == 96
    assert pt_report.missing == [] and {k.rsplit(".", 1)[0] for k in pt_report.unexpected} == {
        "_conv_head", "_bn1", "_fc"}
    np.testing.assert_array_equal(other.get_layer("block6d_dwconv").get_weights()[0],
                                  model.get_layer("block6d_dwconv").get_weights()[0])


def test_lite0_endpoints_dilation_and_input_conversion():
    inputs, endpoints = _lite0_endpoints((64, 64, 3), output_stride=8)
    assert {k: tuple(v.shape[1:]) for k, v in endpoints.items()} == {
        "stride2": (32, 32, 16), "stride4": (16, 16, 24), "stride8": (8, 8, 40), "stride16": (8, 8, 112),
        "stride32": (8, 8, 320)}
    model = keras.Model(inputs, endpoints)
    assert model.get_layer("block4a_dwconv").strides == (1, 1)
    assert [model.get_layer(f"block{b}_dwconv").dilation_rate[0] for b in ("3b", "4a", "5c", "6a", "7a")] == [
        1, 2, 2, 4, 4]
    # ImageNet weights expect ImageNet mean / std; converted to [-1, 1] inputs, the features stay the same away from
    # the zero-padded border.
    plain = keras.Model(*_lite0_endpoints((64, 64, 3)))
    load_backbone_weights(plain, "efficientnet_lite0", "imagenet")
    converted = keras.Model(*_lite0_endpoints((64, 64, 3)))
    report = load_backbone_weights(converted, "efficientnet_lite0", "imagenet", normalization="symmetric")
    assert "stem_conv" in report.input_conversion
    pixels = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    (m_in, s_in), (m_sym, s_sym) = normalization_constants("imagenet"), normalization_constants("symmetric")
    ref = plain.predict((pixels - m_in) / s_in, verbose=0)["stride2"][:, :-2, :-2]
    ours = converted.predict((pixels - m_sym) / s_sym, verbose=0)["stride2"][:, :-2, :-2]
    assert _relative_error(ours, ref) <= TOLERANCE


def test_deeplabv3plus_takes_the_lite0_backbone_with_imagenet_weights():
    model = kerasseg.build_model("deeplabv3plus", 11, (64, 64, 3), backbone="efficientnet_lite0",
                                 backbone_weights="imagenet")
    assert len(model.backbone_weights_report.loaded) == 96
    assert "normalization='symmetric'" in model.backbone_weights_report.input_conversion
    assert model.get_layer("decoder_low_level_conv").input.shape[-1] == 24  # the stride-4 endpoint
    assert model.output.shape[1:] == (64, 64, 11)
    with pytest.raises(ValueError, match=r"Expected multi_grid=None with backbone 'efficientnet_lite0'"):
        kerasseg.build_model("deeplabv3plus", 11, (64, 64, 3), backbone="efficientnet_lite0", multi_grid=(1, 2, 4))
