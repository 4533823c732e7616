"""End-to-end training: dataset → model → ``model.fit`` → best / final ``.keras`` checkpoints.

`tools/train.py` is a thin command-line wrapper over `train`; the same function serves notebooks and scripts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

__all__ = ["TrainConfig", "train", "parse_size"]


def parse_size(text) -> tuple[int, int]:
    """Parses ``"128x256"`` (height x width) or a pair into ``(height, width)``."""
    if isinstance(text, (tuple, list)) and len(text) == 2:
        h, w = text
    else:
        parts = str(text).lower().replace("×", "x").split("x")
        if len(parts) != 2:
            raise ValueError(f"Expected a size as HEIGHTxWIDTH, e.g. 128x256. Received: {text!r}")
        h, w = parts
    try:
        h, w = int(h), int(w)
    except ValueError:
        raise ValueError(f"Expected integer HEIGHTxWIDTH, e.g. 128x256. Received: {text!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"Expected a positive HEIGHTxWIDTH. Received: {text!r}")
    return h, w


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run depends on (also written next to the checkpoints as ``config.json``).

    Attributes:
        model: registry name.
        dataset: dataset format (``"synthetic"`` or ``"folder"``).
        data_dir: dataset root; for ``"synthetic"`` it is generated there when missing.
        output_dir: where checkpoints, history and config go.
        input_size: ``(height, width)`` of the model input and of the training crops.
        epochs: training epochs.
        batch_size: global batch size.
        lr: peak learning rate of the poly schedule.
        weight_decay: decoupled weight decay (AdamW).
        warmup_epochs: linear warm-up length in epochs (may be fractional).
        seed: seed for the data order, augmentation and weight initialisation.
        num_train: synthetic training scenes to generate (synthetic only).
        num_val: synthetic validation scenes to generate (synthetic only).
        model_kwargs: extra builder arguments.
        verbose: Keras ``fit`` verbosity.
    """

    model: str = "erfnet"
    dataset: str = "synthetic"
    data_dir: str = "runs/synthetic"
    output_dir: str = "runs/train"
    input_size: tuple = (128, 256)
    epochs: int = 10
    batch_size: int = 8
    lr: float = 5e-4
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    seed: int = 0
    num_train: int = 300
    num_val: int = 60
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    verbose: int = 2

    def validate(self) -> "TrainConfig":
        self.input_size = parse_size(self.input_size)
        if self.dataset not in ("synthetic", "folder"):
            raise ValueError(f"Expected dataset 'synthetic' or 'folder'. Received: dataset={self.dataset!r}")
        for arg in ("epochs", "batch_size", "num_train", "num_val"):
            value = getattr(self, arg)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected {arg} to be a positive integer. Received: {arg}={value!r}")
        if not self.lr > 0:
            raise ValueError(f"Expected lr > 0. Received: lr={self.lr!r}")
        return self


def _prepare_dataset(cfg: TrainConfig) -> str:
    if cfg.dataset == "synthetic":
        from kerasseg.data.synthetic import write_dataset

        h, w = cfg.input_size
        return write_dataset(cfg.data_dir, num_train=cfg.num_train, num_val=cfg.num_val, height=h, width=w,
                             seed=cfg.seed)
    if not os.path.isdir(cfg.data_dir):
        raise FileNotFoundError(f"Expected a dataset folder. Received: data_dir={cfg.data_dir!r} (not found)")
    return cfg.data_dir


def train(cfg: TrainConfig) -> dict:
    """Trains a model as described by ``cfg``.

    Writes ``best.keras`` (best validation mIoU), ``final.keras``, ``history.csv`` and ``config.json`` to
    ``cfg.output_dir``.

    Returns:
        dict with ``best_val_miou``, ``best_epoch``, ``history`` (per-epoch logs), ``seconds``, ``best_path``,
        ``final_path`` and ``num_classes``.
    """
    import keras

    import kerasseg
    from kerasseg import data as ksdata
    from kerasseg.data.folder import list_pairs, read_classes
    from kerasseg.losses import SparseCategoricalCrossentropyIgnore
    from kerasseg.metrics import MeanIoU
    from kerasseg.saving import atomic_path, save_model
    from kerasseg.training.callbacks import BestModelCheckpoint
    from kerasseg.training.schedules import PolyDecay

    cfg.validate()
    os.makedirs(cfg.output_dir, exist_ok=True)
    root = _prepare_dataset(cfg)
    fmt = "folder"
    classes = read_classes(root)
    num_classes = classes.num_classes
    keras.utils.set_random_seed(cfg.seed)

    h, w = cfg.input_size
    model = kerasseg.build_model(cfg.model, num_classes=num_classes, input_shape=(h, w, 3), **cfg.model_kwargs)
    metadata = model.kerasseg_metadata.with_dataset(class_names=classes.names, palette=classes.colors,
                                                    ignore_label=classes.ignore_label)
    metadata.extra["training"] = {"dataset": cfg.dataset, "data_dir": os.path.abspath(root),
                                  "epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr}
    model.kerasseg_metadata = metadata
    norm = (metadata.mean, metadata.std)

    num_train = len(list_pairs(root, "train"))
    steps_per_epoch = max(1, num_train // cfg.batch_size)
    train_ds = ksdata.load_dataset(fmt, root, "train", batch_size=cfg.batch_size, crop_size=(h, w), augment=True,
                                   normalization=norm, seed=cfg.seed, repeat=True)
    val_ds = ksdata.load_dataset(fmt, root, "val", batch_size=cfg.batch_size, crop_size=(h, w), augment=False,
                                 normalization=norm)

    total_steps = steps_per_epoch * cfg.epochs
    schedule = PolyDecay(cfg.lr, decay_steps=total_steps, power=0.9,
                         warmup_steps=min(int(cfg.warmup_epochs * steps_per_epoch), total_steps - 1))
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay)
    model.compile(optimizer=optimizer,
                  loss=SparseCategoricalCrossentropyIgnore(ignore_label=classes.ignore_label),
                  metrics=[MeanIoU(num_classes, ignore_label=classes.ignore_label)])

    with atomic_path(os.path.join(cfg.output_dir, "config.json")) as tmp, open(tmp, "w") as f:
        json.dump(dataclasses.asdict(cfg), f, indent=2)

    best_path = os.path.join(cfg.output_dir, "best.keras")
    final_path = os.path.join(cfg.output_dir, "final.keras")
    best = BestModelCheckpoint(best_path, monitor="val_miou", mode="max", metadata=metadata,
                               verbose=int(cfg.verbose > 0))
    callbacks = [best, keras.callbacks.CSVLogger(os.path.join(cfg.output_dir, "history.csv")),
                 keras.callbacks.TerminateOnNaN()]
    start = time.perf_counter()
    history = model.fit(train_ds, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch, validation_data=val_ds,
                        callbacks=callbacks, verbose=cfg.verbose)
    seconds = time.perf_counter() - start
    save_model(model, final_path, metadata=metadata)
    logs = [{k: float(v[i]) for k, v in history.history.items()} for i in range(len(history.epoch))]
    return {"best_val_miou": best.best if math.isfinite(best.best) else float("nan"),
            "best_epoch": None if best.best_epoch is None else best.best_epoch + 1,
            "history": logs, "seconds": seconds, "best_path": best_path, "final_path": final_path,
            "num_classes": num_classes, "steps_per_epoch": steps_per_epoch}
