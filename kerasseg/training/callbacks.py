"""Callbacks for segmentation training."""

from __future__ import annotations

import math

import keras

from kerasseg.saving import save_model

__all__ = ["BestModelCheckpoint"]


class BestModelCheckpoint(keras.callbacks.Callback):
    """Saves the model (atomically, with its kerasseg metadata) whenever ``monitor`` improves.

    Unlike ``keras.callbacks.ModelCheckpoint`` the file is written through `kerasseg.save_model`, so the
    preprocessing and class metadata travel with it, and an interrupted write never replaces the previous best.

    Args:
        path: destination ``.keras`` file.
        monitor: logged quantity, e.g. ``"val_miou"``.
        mode: ``"max"`` or ``"min"``.
        metadata: `ModelMetadata` to store (defaults to the model's).
    """

    def __init__(self, path: str, monitor: str = "val_miou", mode: str = "max", metadata=None, verbose: int = 1):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"Expected mode 'max' or 'min'. Received: mode={mode!r}")
        self.path, self.monitor, self.mode, self.metadata, self.verbose = path, monitor, mode, metadata, verbose
        self.best = -math.inf if mode == "max" else math.inf
        self.best_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(f"BestModelCheckpoint monitors {self.monitor!r}, which is not in the logs. "
                           f"Expected one of {sorted(logs or {})}. Received: monitor={self.monitor!r}")
        value = float(value)
        better = value > self.best if self.mode == "max" else value < self.best
        if better and not math.isnan(value):
            if self.verbose:
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {self.best:.4f} to {value:.4f}, "
                      f"saving {self.path}")
            self.best, self.best_epoch = value, epoch
            save_model(self.model, self.path, metadata=self.metadata)
