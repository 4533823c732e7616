"""Fault tolerance: a training process killed with SIGKILL in the middle of an epoch resumes when the same command
is run again, and (deterministic mode) ends with the weights of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tests.saved_weights import saved_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs tools/train.py unchanged, with a small registered model (tracing ERFNet takes most of a minute on a loaded
# 2-core machine); with PAUSE_FLAG set, it announces the middle of epoch 2 through that file and stalls there, so
# that the test can kill it at a known point.
WRAPPER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {root!r})
    import keras
    import kerasseg.training as kt
    from kerasseg.registry import register_model

    @register_model("tiny_test_net")
    def tiny_test_net(num_classes, input_shape=(32, 64, 3)):
        inputs = keras.Input(input_shape, name="image")
        x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="layer01_conv")(inputs)
        x = keras.layers.BatchNormalization(name="layer01_bn")(x)
        x = keras.layers.ReLU(name="layer01_relu")(x)
        x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="decoder_conv")(x)
        x = keras.layers.UpSampling2D(2, interpolation="bilinear", name="decoder_up")(x)
        return keras.Model(inputs, keras.layers.Conv2D(num_classes, 1, name="logits")(x), name="tiny_test_net")

    class Pause(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 0:
                with open(os.environ["PAUSE_FLAG"], "w") as f:
                    f.write("paused")
                time.sleep(600)

    original = kt.train
    if os.environ.get("PAUSE_FLAG"):
        kt.train = lambda cfg, callbacks=None: original(cfg, [Pause()])
    from tools.train import main
    sys.exit(main(sys.argv[1:]))
""")


def _command(wrapper, data_dir, out):
    return [sys.executable, str(wrapper), "--dataset", "folder", "--data-dir", data_dir, "--output-dir", str(out),
            "--input-size", "32x64", "--epochs", "3", "--batch-size", "2", "--steps-per-epoch", "2",
            "--lr", "5e-2", "--deterministic", "--seed", "3", "--verbose", "0",
            "--model", "tiny_test_net"]


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0", CUDA_VISIBLE_DEVICES="")
    env.pop("PAUSE_FLAG", None)
    env.update(extra)
    return env




@pytest.mark.slow
def test_sigkill_mid_epoch_then_rerun_resumes_and_matches_uninterrupted_run(tmp_path):
    from kerasseg.data.synthetic import write_dataset

    data = str(write_dataset(tmp_path / "data", num_train=4, num_val=2, height=32, width=64, seed=0))
    wrapper = tmp_path / "train_wrapper.py"
    wrapper.write_text(WRAPPER.format(root=ROOT))

    reference = subprocess.Popen(_command(wrapper, data, tmp_path / "reference"), env=_env(), cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    out = tmp_path / "interrupted"
    flag = tmp_path / "paused.flag"
    proc = subprocess.Popen(_command(wrapper, data, out), env=_env(PAUSE_FLAG=str(flag)), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 200
    while not flag.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            reference.kill()
            pytest.fail(f"the run never reached epoch 2:\n{proc.communicate()[0][-3000:]}")
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    meta = json.loads((out / "backup" / "training_metadata.json").read_text())
    assert meta["epoch"] == 1  # epoch 1 was backed up, epoch 2 was cut short
    assert not (out / "final.keras").exists()

    resumed = subprocess.run(_command(wrapper, data, out), env=_env(), cwd=ROOT, capture_output=True, text=True,
                             timeout=200)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    ref_out = reference.communicate(timeout=200)[0]
    assert reference.returncode == 0, ref_out[-3000:]
    assert not (out / "backup").exists()  # a finished run removes its backup

    history = (out / "history.csv").read_text().strip().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["0", "1", "2"]  # epoch 1 from the first process

    # The test process has no "tiny_test_net" builder; the weights are read from the files' h5 payload directly.
    a = saved_weights(out / "final.keras")
    b = saved_weights(tmp_path / "reference" / "final.keras")
    assert len(a) == len(b)
    worst = max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))
    print(f"resumed vs uninterrupted: max |dw| = {worst:.3g}")
    # Op determinism plus a data stream resumed at the same batch: the weights agree to float32 round-off (in
    # practice bit for bit).
    assert worst <= 1e-6, f"resumed run differs from the uninterrupted one by {worst}"
