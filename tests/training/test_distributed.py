"""Distributed training: MirroredStrategy over two logical CPU devices matches a single-device run on the same data.

The comparison uses plain SGD (no momentum, no weight decay), no dropout, no augmentation (the random draws of a
distributed input pipeline differ from a single-device one) and synchronised batch norm, so that a replicated step
computes the same update as a single-device step on the global batch up to float32 summation order.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.dataset_fixtures import label_every_pixel
from tests.saved_weights import saved_weights

from tests.paths import ROOT  # noqa: E402

# Largest absolute weight difference allowed between a distributed run and the single-device run after the same
# training steps: the replicas reduce their gradients in another order than a single device sums them, so the
# results differ by float32 round-off, amplified a little by the steps that follow.
TOLERANCE = 1e-5

SCRIPT = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {root!r})
    import tensorflow as tf

    logical = int(os.environ.get("LOGICAL_CPUS", "0"))
    if logical:
        # Must happen before TensorFlow initialises its devices.
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * logical)
    import keras
    from kerasseg.registry import register_model
    from tests.model_cases import tiny_net
    from kerasseg.training import TrainConfig, train

    @register_model("tiny_test_net")
    def tiny_test_net(num_classes, input_shape=(32, 64, 3)):
        return tiny_net(num_classes, input_shape, name="tiny_test_net")

    data_dir, runs = sys.argv[1], json.loads(sys.argv[2])
    for out, strategy in runs:
        cfg = TrainConfig(model="tiny_test_net", dataset="folder", data_dir=data_dir, output_dir=out,
                          input_size=(32, 64), epochs=1, steps_per_epoch=3, batch_size=4, lr=0.05, warmup_epochs=0,
                          optimizer="sgd", momentum=0.0, weight_decay=0.0, seed=5, verbose=0, backup_freq="none",
                          strategy=strategy, sync_bn=strategy != "none", augment=False)
        result = train(cfg)
        print("RESULT", out, result["history"][-1]["loss"], flush=True)
""")


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0", CUDA_VISIBLE_DEVICES="")
    env.update(extra)
    return env




def _max_difference(a_path, b_path) -> float:
    a, b = saved_weights(a_path), saved_weights(b_path)
    assert len(a) == len(b) and all(x.shape == y.shape for x, y in zip(a, b))
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from kerasseg.data.synthetic import write_dataset

    tmp = tmp_path_factory.mktemp("distributed")
    data = str(write_dataset(tmp / "data", num_train=12, num_val=4, height=32, width=64, seed=0))
    label_every_pixel(data)
    script = tmp / "run.py"
    script.write_text(SCRIPT.format(root=ROOT))
    return tmp, data, script


def _check(proc):
    assert proc.returncode == 0, (proc.stdout or "")[-4000:] + (proc.stderr or "")[-4000:]


@pytest.mark.slow
def test_mirrored_two_logical_cpus_matches_single_device(setup):
    tmp, data, script = setup
    runs = [[str(tmp / "single"), "none"], [str(tmp / "mirrored"), "mirrored"]]
    proc = subprocess.run([sys.executable, str(script), data, json.dumps(runs)], env=_env(LOGICAL_CPUS="2"),
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    _check(proc)
    config = json.loads((tmp / "mirrored" / "config.json").read_text())
    assert config["strategy"] == "mirrored" and config["sync_bn"] is True
    diff = _max_difference(tmp / "single" / "final.keras", tmp / "mirrored" / "final.keras")
    print(f"mirrored vs single: max |dw| = {diff:.3g}")
    assert diff <= TOLERANCE
