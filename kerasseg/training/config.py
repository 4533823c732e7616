"""`TrainConfig`: every option of a training run, from code, a YAML/JSON file or the command line."""

from __future__ import annotations

import dataclasses
import json
import os

__all__ = ["TrainConfig", "parse_size", "load_config_file", "config_from_dict", "OPTIMIZERS", "STRATEGIES"]

OPTIMIZERS = ("adamw", "sgd")
STRATEGIES = ("none", "mirrored", "multiworker")


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
        dataset: dataset format, one of `kerasseg.data.DATASET_FORMATS` (``"synthetic"``, ``"folder"``,
            ``"camvid"``, ``"cityscapes"``, ``"voc"``, ``"ade20k"``).
        data_dir: dataset root; for ``"synthetic"`` it is generated there when missing.
        output_dir: where checkpoints, history and config go.
        input_size: ``(height, width)`` of the saved model's input and of the validation images (centre-cropped or
            padded to it); also the training crop unless ``crop_size`` is given.
        crop_size: ``(height, width)`` of the random training crops when they differ from ``input_size``, e.g.
            ``(288, 384)`` crops for a ``(360, 480)`` model: the network is then trained at the crop size and
            validated and saved at ``input_size`` with the same weights (fully convolutional models only).
        scale_range: ``(min, max)`` random scale applied before cropping, e.g. ``(0.75, 1.5)``; ``None``: none.
        photometric: random brightness / contrast / saturation / hue on the training images.
        cache: keep the decoded training and validation images in memory (small datasets).
        train_split: split to train on.
        val_split: split to validate on.
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
        strategy: ``"none"``, ``"mirrored"`` (all local GPUs, or all logical CPUs) or ``"multiworker"``
            (``MultiWorkerMirroredStrategy`` over the cluster in the ``TF_CONFIG`` environment variable: run the same
            training on every worker, each with its own ``TF_CONFIG`` task; only the chief writes ``output_dir``,
            the other workers write to ``output_dir/workertemp_<index>``, removed when the run ends).
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
    crop_size: object = None
    scale_range: object = None
    photometric: bool = False
    cache: bool = False
    train_split: str = "train"
    val_split: str = "val"
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
        from kerasseg.data.formats import FORMAT_NAMES

        if self.dataset not in FORMAT_NAMES:
            raise ValueError(f"Expected dataset to be one of {list(FORMAT_NAMES)}. Received: dataset={self.dataset!r}")
        if self.crop_size is not None:
            self.crop_size = parse_size(self.crop_size)
            if self.crop_size == self.input_size:
                self.crop_size = None
        if self.scale_range is not None:
            try:
                low, high = (float(v) for v in self.scale_range)
            except (TypeError, ValueError):
                raise ValueError(f"Expected scale_range to be a (min, max) pair. "
                                 f"Received: scale_range={self.scale_range!r}") from None
            if not 0 < low <= high:
                raise ValueError(f"Expected scale_range with 0 < min <= max. Received: scale_range={self.scale_range!r}")
            self.scale_range = (low, high)
        if not self.augment and (self.scale_range is not None or self.photometric):
            raise ValueError(f"Expected scale_range and photometric only together with augment=True. Received: "
                             f"augment=False, scale_range={self.scale_range!r}, photometric={self.photometric!r}")
        for arg in ("train_split", "val_split"):
            value = getattr(self, arg)
            if not isinstance(value, str) or not value:
                raise ValueError(f"Expected {arg} to be a split name such as 'train'. Received: {arg}={value!r}")
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
        if self.strategy not in STRATEGIES:
            raise ValueError(f"Expected strategy to be one of {STRATEGIES}. Received: strategy={self.strategy!r}")
        if self.strategy == "multiworker":
            from kerasseg.training.distribute import read_tf_config

            read_tf_config()  # every worker needs TF_CONFIG: fail before anything is built or written
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
        for key in ("input_size", "crop_size", "scale_range"):
            d[key] = list(d[key]) if isinstance(d[key], tuple) else d[key]
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
