"""Callbacks for segmentation training."""

from __future__ import annotations

import dataclasses
import math
import os

import keras

from kerasseg.saving import read_metadata, save_model

__all__ = ["BestModelCheckpoint", "FullSizeValidation", "GuardedBackupAndRestore", "LearningRateLogger", "NaNGuard",
           "SegmentationTensorBoard", "UnfreezeEncoder", "copy_model_weights"]


def _finite_loss(logs) -> bool:
    loss = (logs or {}).get("loss")
    return loss is None or math.isfinite(float(loss))


class GuardedBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` that never backs up a diverged model and keeps the backup when training diverged.

    Keras' callback saves at every epoch end and deletes the backup when ``fit`` returns, also when a NaN loss
    stopped it; then the last good state would be lost.
    """

    def __init__(self, backup_dir, save_freq="epoch"):
        super().__init__(backup_dir, save_freq=save_freq)
        self.diverged = False

    def on_train_batch_end(self, batch, logs=None):
        if not _finite_loss(logs):
            self.diverged = True
        if not self.diverged:
            super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if not _finite_loss(logs):
            self.diverged = True
        if not self.diverged:
            super().on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        if not self.diverged:
            super().on_train_end(logs)


class BestModelCheckpoint(keras.callbacks.Callback):
    """Saves the model (atomically, with its kerasseg metadata) whenever ``monitor`` improves.

    Unlike ``keras.callbacks.ModelCheckpoint`` the file is written through `kerasseg.save_model`, so the
    preprocessing and class metadata travel with it, and an interrupted write never replaces the previous best.

    Args:
        path: destination ``.keras`` file.
        monitor: logged quantity, e.g. ``"val_miou"``.
        mode: ``"max"`` or ``"min"``.
        metadata: `ModelMetadata` to store (defaults to the model's).
        save_model: the model to write instead of the trained one, e.g. an inference view without an auxiliary
            output (it shares the trained model's layers, so it always holds the current weights).
        enabled: ``False`` tracks the best value without writing (non-chief workers of a multi-worker run).
    """

    def __init__(self, path: str, monitor: str = "val_miou", mode: str = "max", metadata=None, verbose: int = 1,
                 save_model=None, enabled: bool = True):
        super().__init__()
        self.save_model, self.enabled = save_model, enabled
        if mode not in ("max", "min"):
            raise ValueError(f"Expected mode 'max' or 'min'. Received: mode={mode!r}")
        self.path, self.monitor, self.mode, self.metadata, self.verbose = path, monitor, mode, metadata, verbose
        self.best = -math.inf if mode == "max" else math.inf
        self.best_epoch = None

    def get_state(self) -> dict:
        """The best value and epoch so far (for `kerasseg.training.resume.ExactBackupAndRestore`)."""
        return {"best": self.best, "best_epoch": self.best_epoch}

    def set_state(self, state: dict) -> None:
        """Restores `get_state`; a better value recorded in the checkpoint file itself wins.

        A process killed after writing a new best file but before its backup reruns that epoch; without this, a
        rerun that scores lower (non-deterministic training) would replace the better file.
        """
        self.best, self.best_epoch = float(state["best"]), state["best_epoch"]
        recorded = self._recorded()
        if recorded is not None and self._better(float(recorded["value"]), self.best):
            self.best, self.best_epoch = float(recorded["value"]), int(recorded["epoch"]) - 1

    def _better(self, value: float, than: float) -> bool:
        return value > than if self.mode == "max" else value < than

    def _recorded(self):
        """The ``{"monitor", "value", "epoch"}`` record of the existing checkpoint file, if it has one."""
        if not os.path.isfile(self.path):
            return None
        try:
            metadata = read_metadata(self.path)
        except ValueError:
            return None
        record = (metadata.extra.get("checkpoint") if metadata is not None else None) or {}
        return record if record.get("monitor") == self.monitor and "value" in record else None

    def on_epoch_end(self, epoch, logs=None):
        if not _finite_loss(logs):
            return  # a diverged model is never "best", whatever its validation score
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(f"BestModelCheckpoint monitors {self.monitor!r}, which is not in the logs. "
                           f"Expected one of {sorted(logs or {})}. Received: monitor={self.monitor!r}")
        value = float(value)
        if self._better(value, self.best) and not math.isnan(value):
            if self.verbose and self.enabled:
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {self.best:.4f} to {value:.4f}, "
                      f"saving {self.path}")
            self.best, self.best_epoch = value, epoch
            if self.enabled:
                model = self.save_model if self.save_model is not None else self.model
                metadata = self.metadata if self.metadata is not None else getattr(model, "kerasseg_metadata", None)
                if metadata is not None:
                    # The score travels with the file, so that a resumed run never replaces it with a worse one.
                    metadata = dataclasses.replace(metadata, extra={**metadata.extra, "checkpoint": {
                        "monitor": self.monitor, "value": value, "epoch": epoch + 1}})
                save_model(model, self.path, metadata=metadata)


def copy_model_weights(source, target) -> None:
    """Copies every weight of ``source`` into ``target``, the same architecture built at another input size.

    Raises:
        ValueError: the weight lists differ in length or in a shape (the first differing weight is named).
    """
    src, dst = source.weights, target.weights
    if len(src) != len(dst):
        raise ValueError(f"Expected {target.name!r} to have the weights of {source.name!r}. Received: "
                         f"{len(dst)} weights for {len(src)}")
    for a, b in zip(src, dst):
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"Expected weight {b.path!r} of shape {tuple(a.shape)} (from {a.path!r}). Received: "
                             f"shape {tuple(b.shape)}; the architecture depends on its input size")
    for a, b in zip(src, dst):
        b.assign(a.value)


class FullSizeValidation(keras.callbacks.Callback):
    """Validates a network trained on crops at its full input size, and logs ``val_miou``.

    Segmentation networks are usually trained on random crops smaller than the frames they are evaluated and
    deployed on. At each epoch end the trained weights are copied into ``full_model`` (the same architecture built
    at the full input size) and the validation split is scored with it through `kerasseg.evaluation.evaluate`, so the
    figure is the whole-frame mIoU the saved model will reach. It adds ``val_miou`` and ``val_pixel_accuracy`` to the
    epoch logs, before the checkpoint callbacks that follow it read them.

    Args:
        train_model: the model being trained (its first output).
        full_model: the same architecture at the full input size, one output.
        val_data: batches of ``(image, label)`` at the full input size.
        num_classes: number of classes.
        ignore_label: label not scored.
        verbose: print the figures.
    """

    def __init__(self, train_model, full_model, val_data, num_classes: int, ignore_label: int = 255,
                 verbose: int = 1):
        super().__init__()
        from kerasseg.evaluation.inference import keras_predict_fn

        self.train_model, self.full_model, self.val_data = train_model, full_model, val_data
        self.num_classes, self.ignore_label, self.verbose = int(num_classes), ignore_label, verbose
        self.predict_fn = keras_predict_fn(full_model)
        self.last = None

    def on_epoch_end(self, epoch, logs=None):
        from kerasseg.evaluation import evaluate

        if not _finite_loss(logs):
            return
        copy_model_weights(self.train_model, self.full_model)
        result = evaluate(self.predict_fn, self.val_data, num_classes=self.num_classes,
                          ignore_label=self.ignore_label, batch_size=8)
        self.last = result
        if logs is not None:
            logs["val_miou"] = float(result.miou)
            logs["val_pixel_accuracy"] = float(result.pixel_accuracy)
        if self.verbose:
            print(f"Epoch {epoch + 1}: full-size validation mIoU {result.miou:.4f}, pixel accuracy "
                  f"{result.pixel_accuracy:.4f}", flush=True)


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the optimizer's current learning rate to the epoch logs as ``learning_rate``.

    ``keras.callbacks.TensorBoard`` writes the learning rate to its event files only, on a copy of the logs; this
    puts it in the logs themselves, so that ``History`` (the ``history`` returned by `train`) and ``CSVLogger``
    (``history.csv``) record it too.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            lr = self.model.optimizer.learning_rate
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))


class NaNGuard(keras.callbacks.TerminateOnNaN):
    """``keras.callbacks.TerminateOnNaN`` that records where the loss stopped being finite.

    Keras' callback stops training (checkpoints written before, ``best.keras`` and the backup, stay untouched) but
    keeps no record of the step; this one keeps ``stopped_at = (epoch, step, loss)``, 1-based, so that `train` can
    report it, and saves it with the callback state for an exact resume.
    """

    def __init__(self):
        super().__init__(raise_error=False)
        self.stopped_at = None

    def get_state(self) -> dict:
        return {"stopped_at": self.stopped_at}

    def set_state(self, state: dict) -> None:
        self.stopped_at = tuple(state["stopped_at"]) if state.get("stopped_at") else None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.stopped_at = (getattr(self, "_epoch", 0) + 1, batch + 1, float(loss))
        super().on_batch_end(batch, logs)


class UnfreezeEncoder(keras.callbacks.Callback):
    """Makes the frozen encoder trainable at the start of epoch ``epoch`` (1-based) and re-traces the train step.

    The optimizer must have been built with all variables before the encoder was frozen, so that it holds slots for
    the encoder variables too.
    """

    def __init__(self, epoch: int, verbose: int = 1):
        super().__init__()
        self.epoch, self.verbose = int(epoch), verbose

    def on_epoch_begin(self, epoch, logs=None):
        from kerasseg.training.transfer import set_encoder_trainable

        # Also after a resume past the unfreeze epoch: the restored run must train what the original trained.
        if epoch + 1 >= self.epoch and not all(layer.trainable for layer in self.model.layers):
            n = set_encoder_trainable(self.model, True)
            self.model.make_train_function(force=True)
            if self.verbose:
                print(f"\nEpoch {epoch + 1}: unfroze {n} encoder layers")


class SegmentationTensorBoard(keras.callbacks.Callback):
    """Per-class validation IoU and validation images with predicted overlays for TensorBoard.

    Losses, mIoU and the learning rate are written by ``keras.callbacks.TensorBoard``;
    this adds what it cannot: ``val_iou/<class>`` scalars read from the `kerasseg.metrics.MeanIoU` metric after
    validation, and ``val_overlay`` images (input, prediction overlay, ground truth overlay side by side).

    Args:
        log_dir: TensorBoard folder (written under ``log_dir/validation``).
        images: a normalised validation batch ``(N, H, W, 3)`` to predict each epoch.
        labels: its labels ``(N, H, W)``.
        metadata: `kerasseg.preprocessing.ModelMetadata` (mean / std, class names, palette, ignore label).
        predict_model: the model whose (main) output is predicted; defaults to the trained model.
    """

    def __init__(self, log_dir: str, images, labels, metadata, predict_model=None):
        super().__init__()
        import os

        import tensorflow as tf

        self.images, self.labels, self.metadata, self.predict_model = images, labels, metadata, predict_model
        self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "validation"))

    def _miou_metric(self):
        from kerasseg.metrics import MeanIoU

        def walk(metrics):
            for m in metrics:
                if isinstance(m, MeanIoU):
                    return m
                found = walk(getattr(m, "metrics", []) or [])
                if found is not None:
                    return found
            return None

        return walk(self.model.metrics)

    def on_epoch_end(self, epoch, logs=None):
        import numpy as np
        import tensorflow as tf

        from kerasseg.visualize import denormalize, overlay

        meta = self.metadata
        model = self.predict_model if self.predict_model is not None else self.model
        logits = model(self.images, training=False)
        if isinstance(logits, (list, tuple)):
            logits = logits[0]
        preds = np.asarray(keras.ops.convert_to_numpy(keras.ops.argmax(logits, axis=-1)))
        rows = []
        for image, pred, label in zip(np.asarray(self.images), preds, np.asarray(self.labels)):
            rgb = denormalize(image, meta.mean, meta.std)
            rows.append(np.concatenate([rgb, overlay(rgb, pred, meta.palette, ignore_label=meta.ignore_label),
                                        overlay(rgb, label, meta.palette, ignore_label=meta.ignore_label)], axis=1))
        metric = self._miou_metric()
        with self.writer.as_default(step=epoch):
            tf.summary.image("val_overlay (image | prediction | ground truth)", np.stack(rows),
                             max_outputs=len(rows))
            if metric is not None:
                for name, iou in zip(meta.class_names, metric.per_class_iou()):
                    if np.isfinite(iou):
                        tf.summary.scalar(f"val_iou/{name}", float(iou))
        self.writer.flush()
