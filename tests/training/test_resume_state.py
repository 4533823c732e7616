"""The backup of `ExactBackupAndRestore` in-process: what it holds, and the backups it refuses."""

import json
import math
import os

import numpy as np
import pytest


def _model():
    import keras

    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, name="dense")(inputs)
    x = keras.layers.Dropout(0.5, name="dropout")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    return model


class _Stop(Exception):
    """Raised by a callback to end a run where a crash would."""


def _interrupted_run(backup_dir, fingerprint, callbacks=()):
    """Two epochs of a model with dropout, interrupted at the start of the third: the backup of epoch 2 stays."""
    import keras

    from kerasseg.training.resume import ExactBackupAndRestore

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise _Stop()

    keras.utils.set_random_seed(0)
    model = _model()
    x, y = np.ones((8, 4), np.float32), np.zeros((8, 2), np.float32)
    backup = ExactBackupAndRestore(str(backup_dir), fingerprint, callbacks=list(callbacks))
    with pytest.raises(_Stop):
        model.fit(x, y, epochs=4, batch_size=4, verbose=0, callbacks=[*callbacks, backup, Interrupt()])
    return model


FINGERPRINT = {"model": "tiny", "batch_size": 4, "seed": 0, "dataset": "folder"}


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    import keras

    backup = tmp_path_factory.mktemp("backup") / "backup"
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=10)
    model = _interrupted_run(backup, FINGERPRINT, callbacks=[stop])
    return {"dir": backup, "model": model, "early_stopping": stop}


def test_backup_holds_the_dropout_random_state_and_callback_counters(interrupted):
    import keras

    from kerasseg.training.resume import ExactBackupAndRestore, read_backup

    state = read_backup(interrupted["dir"], FINGERPRINT)
    assert state["epoch"] == 2
    assert len(state["rng"]["values"]) == 1 and "seed_generator" in state["rng"]["paths"][0]
    stop = interrupted["early_stopping"]
    assert state["callbacks"]["0:EarlyStopping"]["best"] == pytest.approx(float(stop.best))

    # Restored into a fresh model (other initial weights, other random state): everything equals the interrupted one.
    keras.utils.set_random_seed(99)
    fresh = _model()
    fresh.build((None, 4))
    restore_stop = keras.callbacks.EarlyStopping(monitor="loss", patience=10)
    callback = ExactBackupAndRestore(str(interrupted["dir"]), FINGERPRINT, callbacks=[restore_stop])
    callback.set_model(fresh)
    restore_stop.set_model(fresh)
    restore_stop.on_train_begin()
    callback.on_train_begin()
    callback.on_epoch_begin(2)
    for a, b in zip(fresh.variables, interrupted["model"].variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), err_msg=a.path)
    assert fresh.optimizer.iterations.numpy() == interrupted["model"].optimizer.iterations.numpy() == 4
    assert restore_stop.best == pytest.approx(float(stop.best)) and restore_stop.wait == stop.wait
    assert fresh._initial_epoch == 2


def test_backup_of_another_configuration_is_refused(interrupted):
    from kerasseg.errors import BackupMismatchError
    from kerasseg.training.resume import read_backup

    with pytest.raises(BackupMismatchError, match=r"batch_size=8 \(the backup has 4\), seed=1 \(the backup has 0\)"):
        read_backup(interrupted["dir"], {**FINGERPRINT, "batch_size": 8, "seed": 1})
    with pytest.raises(ValueError, match="model='erfnet'"):  # a BackupMismatchError is a ValueError
        read_backup(interrupted["dir"], {**FINGERPRINT, "model": "erfnet"})


def test_altered_foreign_and_unreadable_backups_are_named(interrupted, tmp_path):
    import shutil

    from kerasseg.errors import InvalidFileError
    from kerasseg.training.resume import STATE_FILE, read_backup

    copy = tmp_path / "backup"
    shutil.copytree(interrupted["dir"], copy)
    state = json.loads((copy / STATE_FILE).read_text())
    weights = copy / state["weights"]
    data = bytearray(weights.read_bytes())
    weights.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    with pytest.raises(InvalidFileError, match="Received: a file with other contents") as e:
        read_backup(copy, FINGERPRINT)
    assert str(weights) in str(e.value)
    weights.unlink()
    with pytest.raises(InvalidFileError, match="which is not there"):
        read_backup(copy, FINGERPRINT)
    (copy / STATE_FILE).write_text(json.dumps({**state, "weights": "../../elsewhere.weights.h5"}))
    with pytest.raises(InvalidFileError, match="inside"):
        read_backup(copy, FINGERPRINT)
    (copy / STATE_FILE).write_text(json.dumps({"epoch": 3, "batch": 0}))  # keras.callbacks.BackupAndRestore's
    with pytest.raises(InvalidFileError, match="Expected a backup written by kerasseg"):
        read_backup(copy, FINGERPRINT)
    (copy / STATE_FILE).write_text('{"epoch": 3, "bat')
    with pytest.raises(InvalidFileError, match="cannot be read"):
        read_backup(copy, FINGERPRINT)
    assert read_backup(tmp_path / "none", FINGERPRINT) is None


def test_best_checkpoint_keeps_a_better_file_after_a_restart(tmp_path):
    """A process killed after writing best.keras but before its backup: the rerun epoch scores lower."""
    import keras

    from kerasseg.preprocessing import ModelMetadata
    from kerasseg.saving import read_metadata
    from kerasseg.training.callbacks import BestModelCheckpoint

    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs))
    model.kerasseg_metadata = ModelMetadata.for_model(model, "tiny")
    path = str(tmp_path / "best.keras")
    before = BestModelCheckpoint(path, verbose=0)
    before.set_model(model)
    before.on_epoch_end(0, {"loss": 1.0, "val_miou": 0.5})
    before.on_epoch_end(1, {"loss": 1.0, "val_miou": 0.7})  # written, then the process dies before the backup
    assert read_metadata(path).extra["checkpoint"] == {"monitor": "val_miou", "value": 0.7, "epoch": 2}
    mtime = os.stat(path).st_mtime_ns

    after = BestModelCheckpoint(path, verbose=0)
    after.set_model(model)
    after.set_state({"best": 0.5, "best_epoch": 0})  # the backup of epoch 1
    assert (after.best, after.best_epoch) == (0.7, 1)
    after.on_epoch_end(1, {"loss": 1.0, "val_miou": 0.6})  # the rerun of epoch 2, worse
    assert os.stat(path).st_mtime_ns == mtime and read_metadata(path).extra["checkpoint"]["value"] == 0.7
    after.on_epoch_end(2, {"loss": 1.0, "val_miou": 0.8})
    assert read_metadata(path).extra["checkpoint"]["value"] == 0.8
    fresh = BestModelCheckpoint(path, verbose=0)  # not resuming: the file of an earlier run does not count
    assert fresh.best == -math.inf


def test_trim_csv_log(tmp_path):
    from kerasseg.training.resume import trim_csv_log

    path = tmp_path / "history.csv"
    path.write_text("epoch,loss\n0,1.0\n1,0.9\n2,0.8\n")
    trim_csv_log(path, 2)
    assert path.read_text() == "epoch,loss\n0,1.0\n1,0.9\n"
    trim_csv_log(path, 5)
    assert path.read_text() == "epoch,loss\n0,1.0\n1,0.9\n"
    trim_csv_log(tmp_path / "missing.csv", 1)
    assert not (tmp_path / "missing.csv").exists()


def test_trim_event_files_keeps_what_the_backup_covers(tmp_path):
    import tensorflow as tf
    from tensorboard.compat.proto.event_pb2 import Event

    from kerasseg.training.resume import trim_event_files

    writer = tf.summary.create_file_writer(str(tmp_path / "validation"))
    with writer.as_default():
        tf.summary.text("keras", "model summary", step=0)
        for epoch in range(4):  # 2 steps per epoch
            tf.summary.scalar("epoch_loss", 1.0 / (epoch + 1), step=epoch)
            tf.summary.scalar("evaluation_loss_vs_iterations", 1.0, step=2 * (epoch + 1))
    writer.close()

    def tags():
        out = []
        for name in sorted(os.listdir(tmp_path / "validation")):
            for record in tf.data.TFRecordDataset(str(tmp_path / "validation" / name)):
                event = Event.FromString(bytes(record.numpy()))
                out += [(v.tag, event.step) for v in event.summary.value]
        return sorted(out)

    assert len(tags()) == 9
    assert trim_event_files(tmp_path, epochs=2, iterations=4) == 5
    assert tags() == [("epoch_loss", 0), ("epoch_loss", 1), ("evaluation_loss_vs_iterations", 2),
                      ("evaluation_loss_vs_iterations", 4)]
    assert trim_event_files(tmp_path, epochs=2, iterations=4) == 0
