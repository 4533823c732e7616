"""Fault tolerance: a training process killed with SIGKILL at any point resumes when the same command is run again,
and with ``--deterministic`` ends with the files of an uninterrupted run, bit for bit.

One run directory is killed five times in a row, at points that each leave a different state behind: in the middle
of a training epoch, during validation, after the weights of a backup are written but before the backup is committed,
while ``best.keras`` is being replaced, and once more in the middle of an epoch. After each kill the backup on disk
is checked to be the one that point must leave (so the test cannot pass by killing somewhere harmless); the network
has a ``Dropout`` layer and the data are augmented, so a random state that is not restored shows in the weights.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

from tests.saved_weights import saved_weights

from tests.paths import ROOT  # noqa: E402

# Runs the train tool (kerasseg.cli.train) unchanged, with a small registered model (tracing ERFNet takes most of a
# minute on a loaded 2-core machine). KILL_AT names a point where the process announces itself through KILL_FLAG and
# stalls, so that the test can SIGKILL it there: "train:E:B" after batch B of epoch E (0-based), "val:E" in the
# validation of epoch E, "replace:NAME:E" just before a file NAME written in epoch E is renamed into place (its
# temporary file complete).
WRAPPER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {root!r})
    import keras
    import kerasseg.training as kt
    from kerasseg.registry import register_model
    from tests.model_cases import tiny_net

    @register_model("tiny_test_net")
    def tiny_test_net(num_classes, input_shape=(32, 64, 3)):
        return tiny_net(num_classes, input_shape, name="tiny_test_net", dropout=0.3)

    KILL_AT = os.environ.get("KILL_AT", "").split(":")
    EPOCH = [None]

    def stall(what):
        with open(os.environ["KILL_FLAG"], "w") as f:
            f.write(what)
        time.sleep(600)

    class KillPoints(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            EPOCH[0] = epoch

        def on_train_batch_end(self, batch, logs=None):
            if KILL_AT[0] == "train" and [EPOCH[0], batch] == [int(KILL_AT[1]), int(KILL_AT[2])]:
                stall("train")

        def on_test_batch_end(self, batch, logs=None):
            if KILL_AT[0] == "val" and EPOCH[0] == int(KILL_AT[1]):
                stall("val")

    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if (KILL_AT[0] == "replace" and os.path.basename(dst) == KILL_AT[1] and EPOCH[0] == int(KILL_AT[2])
                and os.path.getsize(src) > 0):
            stall("replace")
        return real_replace(src, dst, *args, **kwargs)

    os.replace = replace
    original = kt.train
    kt.train = lambda cfg, callbacks=None: original(cfg, [KillPoints()])
    from kerasseg.cli.train import main
    sys.exit(main(sys.argv[1:]))
""")
EPOCHS = 4


def _command(wrapper, data_dir, out, batch_size=2):
    return [sys.executable, str(wrapper), "--dataset", "folder", "--data-dir", data_dir, "--output-dir", str(out),
            "--input-size", "32x64", "--epochs", str(EPOCHS), "--batch-size", str(batch_size),
            "--steps-per-epoch", "2", "--lr", "5e-2", "--deterministic", "--seed", "3", "--verbose", "0",
            "--model", "tiny_test_net"]


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0", CUDA_VISIBLE_DEVICES="")
    env.pop("KILL_AT", None)
    env.update(extra)
    return env


def _kill_at(command, point, flag, others=()):
    """Runs ``command`` until it stalls at ``point``, then SIGKILLs it."""
    if flag.exists():
        flag.unlink()
    proc = subprocess.Popen(command, env=_env(KILL_AT=point, KILL_FLAG=str(flag)), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while not flag.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            for other in others:
                other.kill()
            pytest.fail(f"the run never reached {point}:\n{proc.communicate()[0][-3000:]}")
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _backup(out):
    state = json.loads((out / "backup" / "training_metadata.json").read_text())
    return state, sorted(f for f in os.listdir(out / "backup") if f.endswith(".weights.h5"))


def _checkpoint_record(path):
    return json.loads(zipfile.ZipFile(path).read("kerasseg.json"))["extra"]["checkpoint"]


def _data_and_wrapper(tmp_path):
    """A tiny synthetic dataset and the training wrapper script, in ``tmp_path``."""
    from kerasseg.data.synthetic import write_dataset

    data = str(write_dataset(tmp_path / "data", num_train=4, num_val=2, height=32, width=64, seed=0))
    wrapper = tmp_path / "train_wrapper.py"
    wrapper.write_text(WRAPPER.format(root=ROOT))
    return data, wrapper


@pytest.mark.slow
def test_sigkill_at_every_point_then_rerun_ends_bit_for_bit_like_an_uninterrupted_run(tmp_path):
    data, wrapper = _data_and_wrapper(tmp_path)
    ref_dir = tmp_path / "reference"
    reference = subprocess.Popen(_command(wrapper, data, ref_dir), env=_env(), cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, flag = tmp_path / "interrupted", tmp_path / "kill.flag"
    command = _command(wrapper, data, out)

    # 1. Middle of epoch 2: epoch 1 is backed up, epoch 2 is not.
    _kill_at(command, "train:1:0", flag, others=[reference])
    state, files = _backup(out)
    assert (state["epoch"], files) == (1, ["epoch-0001-step-000000.weights.h5"])
    assert state["callbacks"]["2:BestModelCheckpoint"]["best_epoch"] == 0
    assert not (out / "final.keras").exists()
    assert len((out / "history.csv").read_text().splitlines()) == 2  # header and epoch 1

    # Another configuration on the same folder is refused and leaves the backup as it was.
    other = subprocess.run(_command(wrapper, data, out, batch_size=1), env=_env(), cwd=ROOT, capture_output=True,
                           text=True, timeout=240)
    assert other.returncode == 2, other.stderr[-3000:]
    assert "batch_size=1 (the backup has 2)" in other.stderr and str(out / "backup") in other.stderr
    assert _backup(out) == (state, files)

    # 2. Validation of epoch 2 (its training steps done, nothing of it saved).
    _kill_at(command, "val:1", flag, others=[reference])
    assert _backup(out)[0]["epoch"] == 1

    # 3. End of epoch 2, after its weights file is written and before the backup naming it is committed.
    _kill_at(command, "replace:training_metadata.json:1", flag, others=[reference])
    state, files = _backup(out)
    assert state["epoch"] == 1 and "epoch-0002-step-000000.weights.h5" in files  # written, not committed
    # The history has epoch 2's row from the killed process; the resumed run must not repeat it.
    assert len((out / "history.csv").read_text().splitlines()) == 3

    # 4. While best.keras is replaced, in the first epoch after epoch 2 that improves the uninterrupted run's mIoU
    # (epoch 2's own best.keras may have been written by the process killed in 3: its rerun keeps that file).
    ref_out = reference.communicate(timeout=400)[0]
    assert reference.returncode == 0, ref_out[-3000:]
    val = [float(row.split(",")[header.index("val_miou")]) for header in
           [(ref_dir / "history.csv").read_text().splitlines()[0].split(",")]
           for row in (ref_dir / "history.csv").read_text().splitlines()[1:]]
    improving = [e for e in range(2, EPOCHS) if val[e] > max(val[:e])]
    assert improving, f"no epoch after the second improves val_miou {val}: pick another seed"
    _kill_at(command, f"replace:best.keras:{improving[0]}", flag)
    state, _ = _backup(out)
    assert state["epoch"] == improving[0]  # the epoch before is backed up, this one is not

    # 5. A second kill in the middle of the last epoch.
    _kill_at(command, f"train:{EPOCHS - 1}:0", flag)
    assert _backup(out)[0]["epoch"] == EPOCHS - 1

    resumed = subprocess.run(command, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert not (out / "backup").exists()  # a finished run removes its backup

    # The logs: every epoch once, with the numbers of the uninterrupted run.
    assert (out / "history.csv").read_text() == (ref_dir / "history.csv").read_text()
    for name in ("final.keras", "best.keras"):
        a, b = saved_weights(out / name), saved_weights(ref_dir / name)
        assert len(a) == len(b) > 0
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y, err_msg=f"{name} differs from the uninterrupted run's")
    assert _checkpoint_record(out / "best.keras") == _checkpoint_record(ref_dir / "best.keras")


# Two more training processes (about 30 s on the CI machine) for what test_resume_state.py covers in-process
# (trim_event_files); end to end it shows the TensorBoard logs of a killed and resumed run hold each epoch once.
@pytest.mark.heavy
def test_tensorboard_logs_of_a_resumed_run_hold_each_epoch_once(tmp_path):
    import tensorflow as tf
    from tensorboard.compat.proto.event_pb2 import Event

    data, wrapper = _data_and_wrapper(tmp_path)
    out = tmp_path / "out"
    command = _command(wrapper, data, out) + ["--tensorboard", "--epochs", "3"]
    # After epoch 2's summaries are written, before its backup is committed: epoch 2 is run again.
    _kill_at(command, "replace:training_metadata.json:1", tmp_path / "flag")
    assert _backup(out)[0]["epoch"] == 1
    resumed = subprocess.run(command, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for sub in ("train", "validation"):
        steps = {}
        for name in os.listdir(out / "tensorboard" / sub):
            for record in tf.data.TFRecordDataset(str(out / "tensorboard" / sub / name)):
                event = Event.FromString(bytes(record.numpy()))
                for value in event.summary.value:
                    steps.setdefault(value.tag, []).append(event.step)
        assert sorted(steps["epoch_loss"]) == [0, 1, 2], steps
        for tag, logged in steps.items():
            assert len(logged) == len(set(logged)), f"{sub}/{tag} logged twice at a step: {sorted(logged)}"
