"""`TrainConfig`: every option of a training run, from code, a YAML/JSON file or the command line."""

from __future__ import annotations

import dataclasses
import json
import os

__all__ = ["TrainConfig", "parse_size", "load_config_file", "config_from_dict", "OPTIMIZERS", "STRATEGIES"]

OPTIMIZERS = ("adamw", "sgd")
STRATEGIES = ("none", "mirrored")


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
        batch_size: global batch size (split over the replicas under a distribution strategy).
        lr: peak learning rate of the poly schedule.
        weight_decay: decoupled weight decay (AdamW and SGD).
        warmup_epochs: linear warm-up length in epochs (may be fractional).
        seed: seed for the data order, augmentation and weight initialisation.
        num_train: synthetic training scenes to generate (synthetic only).
        num_val: synthetic validation scenes to generate (synthetic only).
        model_kwargs: extra builder arguments (e.g. ``{"aux": true}`` for PSPNet's auxiliary head).
        verbose: Keras ``fit`` verbosity.
        loss: loss name or weighted sum for `kerasseg.losses.get_loss`, e.g. ``"ce"``, ``"ohem"``,
            ``"ce+0.5*lovasz"``.
        class_weights: ``None``/``"none"``, ``"median"`` (median frequency balancing), ``"enet"``
            (``1 / ln(1.02 + p)``), a JSON file with a list of weights, or a list of weights.
        aux_weight: loss weight of a second (auxiliary) model output; the main output has weight 1.
        optimizer: ``"adamw"`` or ``"sgd"`` (SGD with ``momentum`` and decoupled weight decay).
        momentum: SGD momentum.
        deterministic: seeds everything and enables TensorFlow's op determinism (identical weights for identical
            runs, at some speed cost).
        mixed_precision: ``mixed_float16`` compute with float32 logits and loss scaling (for GPUs).
        jit: XLA-compile the train step (``True``); ``None`` leaves Keras' default (``"auto"``).
        strategy: ``"none"`` or ``"mirrored"`` (all local GPUs, or all logical CPUs).
        sync_bn: batch-norm statistics over the global batch (all replicas) instead of per replica.
        backup_freq: BackupAndRestore frequency: ``"epoch"``, a number of steps, or ``"none"`` to disable; a run
            restarted on the same ``output_dir`` resumes from the backup.
        steps_per_epoch: training steps per epoch; ``None`` = training images // batch size.
        augment: random flip / crop of the training images (and shuffling); ``False`` feeds the training split in
            file order, unchanged.
        tensorboard: write TensorBoard logs to ``output_dir/tensorboard``.
        tensorboard_images: validation images with predicted overlays logged each epoch.
        init_from: a ``.keras`` checkpoint whose weights are copied into the new model by layer name and shape.
        freeze_encoder: keep the encoder layers (`kerasseg.training.transfer.encoder_layers`) frozen.
        unfreeze_at_epoch: with ``freeze_encoder``, train the whole model from this (1-based) epoch on.
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
    loss: str = "ce"
    class_weights: object = None
    aux_weight: float = 0.4
    optimizer: str = "adamw"
    momentum: float = 0.9
    deterministic: bool = False
    mixed_precision: bool = False
    jit: object = None
    strategy: str = "none"
    sync_bn: bool = False
    backup_freq: object = "epoch"
    steps_per_epoch: object = None
    augment: bool = True
    tensorboard: bool = False
    tensorboard_images: int = 3
    init_from: object = None
    freeze_encoder: bool = False
    unfreeze_at_epoch: object = None

    def validate(self) -> "TrainConfig":
        """Normalises and checks the options; raises ``ValueError`` naming the offending option."""
        self.input_size = parse_size(self.input_size)
        if self.dataset not in ("synthetic", "folder"):
            raise ValueError(f"Expected dataset 'synthetic' or 'folder'. Received: dataset={self.dataset!r}")
        for arg in ("epochs", "batch_size", "num_train", "num_val"):
            value = getattr(self, arg)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected {arg} to be a positive integer. Received: {arg}={value!r}")
        if not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ValueError(f"Expected lr > 0. Received: lr={self.lr!r}")
        if not isinstance(self.model_kwargs, dict):
            raise ValueError(f"Expected model_kwargs to be a dict. Received: model_kwargs={self.model_kwargs!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Expected optimizer to be one of {OPTIMIZERS}. Received: optimizer={self.optimizer!r}")
        if self.strategy == "multiworker":
            # Keras 3's fit fails under MultiWorkerMirroredStrategy (it reduces the first (image, label) batch and
            # the per-replica logs with calls that strategy rejects), so a multi-worker run cannot train.
            raise ValueError("Expected strategy 'none' or 'mirrored': Keras 3 model.fit does not run under "
                             "MultiWorkerMirroredStrategy. Received: strategy='multiworker'")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"Expected strategy to be one of {STRATEGIES}. Received: strategy={self.strategy!r}")
        if not isinstance(self.aux_weight, (int, float)) or self.aux_weight < 0:
            raise ValueError(f"Expected aux_weight >= 0. Received: aux_weight={self.aux_weight!r}")
        if not isinstance(self.loss, str) or not self.loss.strip():
            raise ValueError(f"Expected loss to be a loss name such as 'ce' or 'ce+0.5*lovasz'. "
                             f"Received: loss={self.loss!r}")
        if isinstance(self.backup_freq, str) and self.backup_freq.isdigit():
            self.backup_freq = int(self.backup_freq)
        if self.backup_freq in (None, 0, "none"):
            self.backup_freq = "none"
        elif self.backup_freq != "epoch" and (isinstance(self.backup_freq, bool)
                                              or not isinstance(self.backup_freq, int) or self.backup_freq < 1):
            raise ValueError(f"Expected backup_freq to be 'epoch', 'none' or a positive number of steps. "
                             f"Received: backup_freq={self.backup_freq!r}")
        for arg in ("steps_per_epoch", "unfreeze_at_epoch"):
            value = getattr(self, arg)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"Expected {arg} to be a positive integer or None. Received: {arg}={value!r}")
        if self.unfreeze_at_epoch is not None and not self.freeze_encoder:
            raise ValueError(f"Expected unfreeze_at_epoch only together with freeze_encoder=True. "
                             f"Received: unfreeze_at_epoch={self.unfreeze_at_epoch!r}, freeze_encoder=False")
        if self.unfreeze_at_epoch is not None and self.unfreeze_at_epoch > self.epochs:
            raise ValueError(f"Expected unfreeze_at_epoch <= epochs ({self.epochs}). "
                             f"Received: unfreeze_at_epoch={self.unfreeze_at_epoch!r}")
        if self.init_from is not None and not os.path.isfile(self.init_from):
            raise ValueError(f"Expected init_from to be an existing .keras file. Received: "
                             f"init_from={self.init_from!r} (not found)")
        if self.jit not in (None, True, False):
            raise ValueError(f"Expected jit to be True, False or None. Received: jit={self.jit!r}")
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["input_size"] = list(d["input_size"]) if isinstance(d["input_size"], tuple) else d["input_size"]
        return d


def config_from_dict(values: dict, source: str = "config") -> TrainConfig:
    """A `TrainConfig` from a dict; keys may use dashes (``input-size``) or underscores.

    Raises:
        ValueError: an unknown key (the message lists the known ones) or a non-mapping.
    """
    if not isinstance(values, dict):
        raise ValueError(f"Expected a mapping of training options in {source}. Received: {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    clean = {str(k).replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(clean) - known)
    if unknown:
        raise ValueError(f"Unknown training option(s) {unknown} in {source}. Expected any of {sorted(known)}.")
    return TrainConfig(**clean)


def load_config_file(path) -> dict:
    """Reads training options from a YAML (``yaml.safe_load``) or JSON file as a dict (an empty file gives ``{}``)."""
    import yaml

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Expected a YAML or JSON config file. Received: config={path!r} (not found)")
    with open(path) as f:
        text = f.read()
    try:
        values = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise ValueError(f"Expected a valid YAML or JSON file. Received: config={path!r} ({e})") from None
    values = {} if values is None else values
    config_from_dict(values, source=path)  # validates the keys
    return {str(k).replace("-", "_"): v for k, v in values.items()}
