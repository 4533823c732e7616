"""Exact resume of an interrupted training run: everything that decides the next number is backed up.

`ExactBackupAndRestore` extends ``keras.callbacks.BackupAndRestore`` (Keras 3), which restores the weights, the
optimizer and the epoch counter but lacks what an *exact* resume needs:

- the state of the random seed generators of layers such as ``Dropout`` (``Model.save_weights`` leaves them out,
  so a resumed run draws the dropout masks of epoch 1 again);
- the state of the other callbacks (the best value of `BestModelCheckpoint`, early stopping counters, the
  `NaNGuard`), so that a resumed run does not start again from "improved from -inf";
- atomic files: Keras writes the weights in place and then the epoch counter, so a process killed while writing
  leaves a truncated HDF5 file or weights of one epoch with the counter of another;
- a record of the run configuration: a backup of another model, dataset, batch size or seed is silently loaded (or
  fails with a shape error).

The data order is restored by the trainer, which skips the batches the backed-up epochs consumed (the ``tf.data``
pipeline is seeded, so the skipped stream is the one an uninterrupted run saw).

Files in ``backup_dir``: ``epoch-NNNN.weights.h5`` (weights and optimizer) and ``training_metadata.json`` (epoch,
configuration, random states, callback states and the SHA-256 of the weights file), each written through
`kerasseg.saving.atomic_path`. The metadata file is the commit point: the weights file it names is complete before
it is written, and older weights files are deleted only after it, so a kill at any moment leaves one consistent state.
"""

from __future__ import annotations

import hashlib
import json
import os

import keras

from kerasseg.errors import BackupMismatchError, InvalidFileError
from kerasseg.saving import atomic_path
from kerasseg.training.callbacks import GuardedBackupAndRestore

__all__ = ["ExactBackupAndRestore", "read_backup", "run_fingerprint", "trim_csv_log", "trim_event_files", "STATE_FILE"]

STATE_FILE = "training_metadata.json"
FORMAT = "kerasseg-backup/1"
# Options that do not change a single number of the run: a backup may be resumed with other values.
_NEUTRAL_OPTIONS = ("verbose", "output_dir", "tensorboard", "tensorboard_images", "cache", "backup_freq")


def run_fingerprint(config: dict) -> dict:
    """The options of a run that decide its numbers (`TrainConfig.to_dict` without the neutral ones)."""
    out = {k: v for k, v in config.items() if k not in _NEUTRAL_OPTIONS}
    if out.get("data_dir") is not None:
        out["data_dir"] = os.path.abspath(os.fspath(out["data_dir"]))
    return json.loads(json.dumps(out))  # tuples → lists, as read back from the file


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_backup(backup_dir, fingerprint: dict) -> dict | None:
    """The state recorded in ``backup_dir``, checked against this run's configuration.

    Args:
        backup_dir: the backup folder of a run.
        fingerprint: `run_fingerprint` of the run that wants to resume.

    Returns:
        The metadata dict (``epoch``: completed epochs, ``weights``, ``rng``, ``callbacks``...), or ``None`` when
        there is no backup.

    Raises:
        BackupMismatchError: the backup was written with other options (they are listed).
        InvalidFileError: the metadata is not a kerasseg backup, or its weights file is missing or altered.
    """
    path = os.path.join(os.fspath(backup_dir), STATE_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            state = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidFileError(f"Expected a JSON training backup. Received: {path!r}, which cannot be read ({e})") \
            from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InvalidFileError(
            f"Expected a backup written by kerasseg ({FORMAT!r}) to resume from. Received: {path!r} without it "
            f"(written by keras.callbacks.BackupAndRestore or an older kerasseg?). Delete {backup_dir!r} to start "
            f"the run afresh")
    recorded = state.get("config") or {}
    differences = [f"{k}={fingerprint.get(k)!r} (the backup has {recorded.get(k)!r})"
                   for k in sorted(set(recorded) | set(fingerprint)) if recorded.get(k) != fingerprint.get(k)]
    if differences:
        raise BackupMismatchError(
            f"Expected the backup in {backup_dir!r} to come from a run with this configuration, to resume it. "
            f"Received: {', '.join(differences)}. Use another output folder, or delete {backup_dir!r} to start "
            f"afresh")
    weights = os.path.join(os.fspath(backup_dir), str(state.get("weights", "")))
    if not os.path.isfile(weights) or os.path.dirname(os.path.abspath(weights)) != os.path.abspath(backup_dir):
        raise InvalidFileError(f"Expected the weights file named in {path!r} inside {backup_dir!r}. Received: "
                               f"weights={state.get('weights')!r}, which is not there")
    if _sha256(weights) != state.get("sha256"):
        raise InvalidFileError(f"Expected {weights!r} to hold the weights recorded in {path!r} (SHA-256 "
                               f"{state.get('sha256')}). Received: a file with other contents")
    return state


def trim_csv_log(path, epochs: int) -> None:
    """Keeps the header and the first ``epochs`` rows of a CSV log: the rows of epochs after the backup are redone.

    Written atomically; a missing file is left missing.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        return
    with open(path) as f:
        lines = f.readlines()
    keep = lines[:1 + int(epochs)] if lines else []
    if len(keep) == len(lines):
        return
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.writelines(keep)


def trim_event_files(log_dir, epochs: int, iterations: int) -> int:
    """Drops the TensorBoard events a resumed run writes again, so that its logs continue rather than repeat.

    TensorBoard has no notion of a rerun epoch: points of a killed epoch would show next to those of its rerun.
    Kept: epoch summaries with ``step < epochs``, the ``*_vs_iterations`` summaries of ``keras.callbacks.TensorBoard``
    (stepped by optimizer iterations) with ``step <= iterations``, and events without summaries except the graph,
    which the resumed run writes again. Each file is rewritten atomically.

    Args:
        log_dir: the TensorBoard folder (searched recursively for ``events.out.tfevents.*`` files).
        epochs: epochs in the backup.
        iterations: optimizer iterations in the backup.

    Returns:
        The number of events dropped.
    """
    import tensorflow as tf
    from tensorboard.compat.proto.event_pb2 import Event

    dropped = 0
    for folder, _, files in os.walk(os.fspath(log_dir)):
        for name in files:
            if not name.startswith("events.out.tfevents."):
                continue
            path = os.path.join(folder, name)
            records = [bytes(r.numpy()) for r in tf.data.TFRecordDataset(path)]
            kept = []
            for record in records:
                event = Event.FromString(record)
                if event.HasField("summary"):
                    later = any(v.tag.endswith("_vs_iterations") and event.step > iterations
                                or not v.tag.endswith("_vs_iterations") and event.step >= epochs
                                for v in event.summary.value)
                    # The model summary (tag "keras", step 0) is written again at the start of the resumed run.
                    rewritten = any(v.tag == "keras" for v in event.summary.value)
                    if later or rewritten:
                        continue
                elif event.HasField("graph_def"):
                    continue
                kept.append(record)
            if len(kept) == len(records):
                continue
            dropped += len(records) - len(kept)
            with atomic_path(path, suffix=".tfevents") as tmp:
                with tf.io.TFRecordWriter(tmp) as writer:
                    for record in kept:
                        writer.write(record)
    return dropped


def _seed_generator_variables(model):
    """Variables that are state but not weights: the seed generators of random layers (``Dropout``, noise...)."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def callback_state(callback):
    """A JSON-able state of ``callback``: its ``get_state()``, or the counters of Keras' own stateful callbacks."""
    if hasattr(callback, "get_state"):
        return callback.get_state()
    for cls, names in _KERAS_STATEFUL.items():
        if isinstance(callback, cls):
            return {n: _plain(getattr(callback, n, None)) for n in names}
    return None


def set_callback_state(callback, state) -> None:
    if hasattr(callback, "set_state"):
        callback.set_state(state)
        return
    for name, value in state.items():
        setattr(callback, name, value)


def _plain(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return float(keras.ops.convert_to_numpy(value))


# Keras callbacks whose counters decide later epochs (EarlyStopping's restore_best_weights copy is not kept).
_KERAS_STATEFUL = {
    keras.callbacks.EarlyStopping: ("wait", "stopped_epoch", "best", "best_epoch"),
    keras.callbacks.ReduceLROnPlateau: ("wait", "cooldown_counter", "best"),
}


class ExactBackupAndRestore(GuardedBackupAndRestore):
    """Backs up and restores everything that decides the next number of a run (see the module docstring).

    Place it after the callbacks whose files must be complete before an epoch counts as done (checkpoints, logs).

    Args:
        backup_dir: folder of the backup (deleted when ``fit`` ends normally, kept when training diverged).
        fingerprint: `run_fingerprint` of the run; a backup with another one is refused.
        save_freq: ``"epoch"`` or a number of steps (a mid-epoch backup restarts its epoch from the first batch
            with the mid-epoch weights, as Keras does: not exact).
        callbacks: the run's other callbacks; the state of those with ``get_state`` / ``set_state`` (and of Keras'
            ``EarlyStopping`` and ``ReduceLROnPlateau``) is saved and restored.
    """

    def __init__(self, backup_dir, fingerprint: dict, save_freq="epoch", callbacks=()):
        super().__init__(backup_dir, save_freq=save_freq)
        self.fingerprint = dict(fingerprint)
        self.callbacks = list(callbacks)
        self._restored_callbacks = None

    def on_train_begin(self, logs=None):
        # Keras' version falls back to a ".bkp" copy on a broken file; with atomic writes there is none to fall
        # back to, and a broken or foreign backup must stop the run with its name rather than be replaced.
        self._load_model()

    def _load_model(self):
        state = read_backup(self.backup_dir, self.fingerprint)
        if state is None:
            return
        model = self.model
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        path = os.path.join(self.backup_dir, state["weights"])
        try:
            model.load_weights(path)
        except (ValueError, OSError, KeyError) as e:
            raise InvalidFileError(f"Expected {path!r} to hold the weights of model {model.name!r}. Received: a file "
                                   f"that does not fit it ({e})") from None
        variables = _seed_generator_variables(model)
        rng = state.get("rng", {})
        # By position, as Keras matches weights: the generators' names carry process-wide counters.
        if len(rng.get("values", [])) != len(variables):
            raise BackupMismatchError(f"Expected the random state in {self.backup_dir!r} to hold the "
                                      f"{len(variables)} seed generators of model {model.name!r}. Received: "
                                      f"{len(rng.get('values', []))} ({rng.get('paths')})")
        for variable, value in zip(variables, rng.get("values", [])):
            variable.assign(keras.ops.convert_to_tensor(value, dtype=variable.dtype))
        self._restored_callbacks = state.get("callbacks", {})
        self._current_epoch = int(state["epoch"])
        model._initial_epoch = int(state["epoch"])  # what Keras' own callback sets: fit starts there

    def on_epoch_begin(self, epoch, logs=None):
        # After every callback's on_train_begin (some, like EarlyStopping, reset their counters there).
        if self._restored_callbacks is not None:
            for key, callback in self._keyed_callbacks():
                if key in self._restored_callbacks and self._restored_callbacks[key] is not None:
                    set_callback_state(callback, self._restored_callbacks[key])
            self._restored_callbacks = None

    def _keyed_callbacks(self):
        return [(f"{i}:{type(c).__name__}", c) for i, c in enumerate(self.callbacks)]

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        epoch, batch = int(self._current_epoch), int(self._last_batch_seen)
        name = f"epoch-{epoch:04d}-step-{batch:06d}.weights.h5"
        path = os.path.join(self.backup_dir, name)
        with atomic_path(path, suffix=".weights.h5") as tmp:
            self.model.save_weights(tmp, overwrite=True)
            digest = _sha256(tmp)
        variables = _seed_generator_variables(self.model)
        state = {
            "format": FORMAT, "epoch": epoch, "batch": batch, "weights": name, "sha256": digest,
            "config": self.fingerprint,
            "rng": {"paths": [v.path for v in variables],
                    "values": [keras.ops.convert_to_numpy(v.value).tolist() for v in variables]},
            "callbacks": {key: callback_state(c) for key, c in self._keyed_callbacks()},
        }
        with atomic_path(os.path.join(self.backup_dir, STATE_FILE)) as tmp, open(tmp, "w") as f:
            json.dump(state, f)
        # Only now is the new state committed; the weights of older states (and of states cut short) can go.
        # Temporary files of writes that were killed start with a dot (atomic_path); the folder is the backup's own.
        for other in os.listdir(self.backup_dir):
            if (other.endswith(".weights.h5") and other != name) or (other.startswith(".") and ".tmp" in other):
                os.remove(os.path.join(self.backup_dir, other))
