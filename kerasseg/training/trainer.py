"""End-to-end training: dataset → model → ``model.fit`` → best / final ``.keras`` checkpoints.

`tools/train.py` is a thin command-line wrapper over `train`; the same function serves notebooks and scripts.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time

from kerasseg.training.config import TrainConfig, parse_size

__all__ = ["TrainConfig", "train", "parse_size", "TrainingDivergedError"]


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the checkpoints written before are kept."""


def _prepare_dataset(cfg: TrainConfig) -> str:
    if cfg.dataset == "synthetic":
        from kerasseg.data.synthetic import write_dataset

        h, w = cfg.input_size
        return write_dataset(cfg.data_dir, num_train=cfg.num_train, num_val=cfg.num_val, height=h, width=w,
                             seed=cfg.seed)
    if not os.path.isdir(cfg.data_dir):
        raise FileNotFoundError(f"Expected a dataset folder. Received: data_dir={cfg.data_dir!r} (not found)")
    return cfg.data_dir


def _make_optimizer(cfg: TrainConfig, schedule):
    import keras

    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=cfg.momentum,
                                    weight_decay=cfg.weight_decay if cfg.weight_decay > 0 else None)
    return keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay)


@contextlib.contextmanager
def _precision_policy(mixed: bool):
    """Sets the global Keras dtype policy for the duration of a run and restores it afterwards."""
    import keras

    previous = keras.mixed_precision.global_policy()
    if mixed:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _float32_outputs(model):
    """The model with float32 outputs: under mixed precision the logits must leave the model in float32."""
    import keras

    if all(o.dtype == "float32" for o in model.outputs):
        return model
    outputs = [keras.layers.Activation("linear", dtype="float32", name=f"{o.name.split('/')[0]}_float32")(o)
               for o in model.outputs]
    wrapped = keras.Model(model.inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)
    wrapped.kerasseg_metadata = model.kerasseg_metadata
    return wrapped


def train(cfg: TrainConfig, callbacks=None) -> dict:
    """Trains a model as described by ``cfg``.

    Writes ``best.keras`` (best validation mIoU), ``final.keras``, ``history.csv`` and ``config.json`` to
    ``cfg.output_dir`` (and ``backup/`` while running, ``tensorboard/`` with ``cfg.tensorboard``). The saved models
    are the inference models: a second (auxiliary) output is dropped. Running again on the same ``output_dir``
    after an interruption resumes from ``backup/``.

    Args:
        cfg: the run's options.
        callbacks: extra Keras callbacks, run after the built-in ones.

    Returns:
        dict with ``best_val_miou``, ``best_epoch``, ``history`` (per-epoch logs), ``seconds``, ``best_path``,
        ``final_path``, ``num_classes``, ``steps_per_epoch``, ``initial_epoch`` (epochs restored from a backup),
        ``class_weights`` and ``transfer`` (the `copy_weights` report with ``init_from``).

    Raises:
        TrainingDivergedError: the loss became NaN or infinite (``best.keras`` and the backup stay as they were).
    """
    cfg.validate()
    with _precision_policy(cfg.mixed_precision):
        return _train(cfg, list(callbacks or []))


def _train(cfg: TrainConfig, extra_callbacks: list) -> dict:
    import keras
    import tensorflow as tf

    from kerasseg import data as ksdata
    from kerasseg.data.class_weights import resolve_class_weights
    from kerasseg.data.formats import resolve
    from kerasseg.losses import get_loss
    from kerasseg.metrics import MeanIoU
    from kerasseg.models.factory import build_model
    from kerasseg.saving import atomic_path, save_model
    from kerasseg.training import callbacks as kscb
    from kerasseg.training.distribute import is_chief, make_strategy, synchronize_batch_norm, worker_dir
    from kerasseg.training.resume import (ExactBackupAndRestore, read_backup, run_fingerprint, trim_csv_log,
                                          trim_event_files)
    from kerasseg.training.schedules import PolyDecay
    from kerasseg.training.transfer import copy_weights, set_encoder_trainable

    if cfg.deterministic:
        # Op determinism makes every kernel (and tf.data's parallel map order) reproducible; it needs a global seed.
        tf.config.experimental.enable_op_determinism()
    strategy = make_strategy(cfg.strategy)
    chief = is_chief(strategy)
    # The chief writes to output_dir; other workers of a multi-worker run write their backup, history and logs to a
    # folder of their own inside it (removed after the run), so that they never overwrite the chief's files.
    out = worker_dir(strategy, cfg.output_dir)
    os.makedirs(out, exist_ok=True)
    backup_dir = os.path.join(out, "backup")
    fingerprint = run_fingerprint(cfg.to_dict())
    # Checked before any file of the run is touched: a backup of another configuration is refused, never mixed in.
    backup = read_backup(backup_dir, fingerprint) if cfg.backup_freq != "none" else None
    initial_epoch = int(backup["epoch"]) if backup else 0
    root = _prepare_dataset(cfg)
    # A generated synthetic dataset is a plain folder dataset.
    data_format = "folder" if cfg.dataset == "synthetic" else cfg.dataset
    train_spec = resolve(data_format, root, cfg.train_split)
    resolve(data_format, root, cfg.val_split)  # fails now, naming the folder, rather than after the first epoch
    classes = train_spec.classes
    num_classes = classes.num_classes
    class_weights = resolve_class_weights(cfg.class_weights, root, num_classes, data_format, cfg.train_split)
    keras.utils.set_random_seed(cfg.seed)

    h, w = cfg.crop_size or cfg.input_size
    with strategy.scope():
        model = build_model(cfg.model, num_classes=num_classes, input_shape=(h, w, 3), **cfg.model_kwargs)
        metadata = model.kerasseg_metadata.with_dataset(class_names=classes.names, palette=classes.colors,
                                                        ignore_label=classes.ignore_label)
        metadata.extra["training"] = {"dataset": cfg.dataset, "data_dir": os.path.abspath(root),
                                      "epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr,
                                      "loss": cfg.loss, "optimizer": cfg.optimizer,
                                      "class_weights": cfg.class_weights if isinstance(cfg.class_weights, str)
                                      else class_weights,
                                      "crop_size": list(cfg.crop_size or cfg.input_size)}
        model.kerasseg_metadata = metadata
        transfer = None
        if cfg.init_from:
            transfer = copy_weights(cfg.init_from, model)
            if cfg.verbose:
                print(f"init_from {cfg.init_from}: copied {len(transfer['copied'])} layers, "
                      f"{len(transfer['shape_mismatch'])} with other shapes kept "
                      f"({', '.join(transfer['shape_mismatch']) or 'none'}), "
                      f"{len(transfer['missing'])} absent from the checkpoint", flush=True)
        if cfg.sync_bn:
            model = synchronize_batch_norm(model)
        if cfg.mixed_precision:
            model = _float32_outputs(model)
        num_outputs = len(model.outputs)
        if num_outputs > 2:
            raise ValueError(f"Expected a model with 1 output (logits) or 2 (logits, auxiliary logits). "
                             f"Received: model={cfg.model!r} with {num_outputs} outputs")
        # The saved model is the inference model: only the main output (it shares the trained layers).
        inference_model = model if num_outputs == 1 else keras.Model(model.inputs, model.outputs[0],
                                                                     name=model.name)
        inference_model.kerasseg_metadata = metadata
        full_size_model = None
        if cfg.crop_size is not None:
            # Trained on crops, validated and saved at the full input size: the same builder at that size, whose
            # weights are refreshed from the trained network before every validation and save.
            full_size_model = build_model(cfg.model, num_classes=num_classes, input_shape=(*cfg.input_size, 3),
                                          **cfg.model_kwargs)
            if len(full_size_model.outputs) == 2:
                full_size_model = keras.Model(full_size_model.inputs, full_size_model.outputs[0],
                                              name=full_size_model.name)
            full_metadata = metadata.with_input_shape((*cfg.input_size, 3))
            full_size_model.kerasseg_metadata = full_metadata
            kscb.copy_model_weights(inference_model, full_size_model)

        norm = (metadata.mean, metadata.std)
        num_train = len(train_spec.pairs)
        steps_per_epoch = cfg.steps_per_epoch or max(1, num_train // cfg.batch_size)
        total_steps = steps_per_epoch * cfg.epochs
        schedule = PolyDecay(cfg.lr, decay_steps=total_steps, power=0.9,
                             warmup_steps=min(int(cfg.warmup_epochs * steps_per_epoch), total_steps - 1))
        optimizer = _make_optimizer(cfg, schedule)
        loss = get_loss(cfg.loss, ignore_label=classes.ignore_label,
                        **({"class_weights": class_weights} if class_weights is not None else {}))
        miou = MeanIoU(num_classes, ignore_label=classes.ignore_label)
        if num_outputs == 1:
            compile_args = {"loss": loss, "metrics": [miou]}
        else:
            aux_loss = get_loss(cfg.loss, ignore_label=classes.ignore_label,
                                **({"class_weights": class_weights} if class_weights is not None else {}))
            compile_args = {"loss": [loss, aux_loss], "loss_weights": [1.0, float(cfg.aux_weight)],
                            "metrics": [[miou], []]}
        if cfg.freeze_encoder:
            # Slots for every variable first, so that unfreezing later needs no new optimizer.
            optimizer.build(model.trainable_variables)
            set_encoder_trainable(model, False)
        model.compile(optimizer=optimizer, jit_compile="auto" if cfg.jit is None else cfg.jit, **compile_args)

    train_ds = ksdata.load_dataset(data_format, root, cfg.train_split, batch_size=cfg.batch_size, crop_size=(h, w),
                                   augment=cfg.augment, normalization=norm, seed=cfg.seed, repeat=True,
                                   scale_range=cfg.scale_range, photometric=cfg.photometric, cache=cfg.cache)
    if initial_epoch:
        # A resumed run continues the data stream where the interrupted one stood after its last backed-up epoch,
        # so a deterministic run sees exactly the batches an uninterrupted run would.
        train_ds = train_ds.skip(initial_epoch * steps_per_epoch)
    val_ds = ksdata.load_dataset(data_format, root, cfg.val_split, batch_size=cfg.batch_size,
                                 crop_size=cfg.input_size, augment=False, normalization=norm, cache=cfg.cache)
    if num_outputs == 2:
        # The auxiliary head is supervised with the same labels as the main output.
        train_ds = train_ds.map(lambda x, y: (x, (y, y)))
        if full_size_model is None:
            val_ds = val_ds.map(lambda x, y: (x, (y, y)))
    options = tf.data.Options()
    options.deterministic = True
    # Each replica takes its share of every global batch (file sharding would change the batches' contents).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    train_ds, val_ds = train_ds.with_options(options), val_ds.with_options(options)

    resolved = cfg.to_dict()
    if chief:
        with atomic_path(os.path.join(cfg.output_dir, "config.json")) as tmp, open(tmp, "w") as f:
            json.dump(resolved, f, indent=2)
    if cfg.verbose:
        print("training config: " + json.dumps(resolved, sort_keys=True), flush=True)
        if initial_epoch:
            print(f"resuming from {backup_dir} after epoch {initial_epoch}", flush=True)

    monitor = "val_miou"
    if num_outputs == 2 and full_size_model is None:
        monitor = f"val_{model.output_names[0]}_miou"
    best_path = os.path.join(cfg.output_dir, "best.keras")
    final_path = os.path.join(cfg.output_dir, "final.keras")
    saved_model = inference_model if full_size_model is None else full_size_model
    saved_metadata = saved_model.kerasseg_metadata
    best = kscb.BestModelCheckpoint(best_path, monitor=monitor, mode="max", metadata=saved_metadata,
                                    verbose=int(cfg.verbose > 0), save_model=saved_model, enabled=chief)
    nan_guard = kscb.NaNGuard()
    callbacks = [kscb.LearningRateLogger(), nan_guard]
    if full_size_model is not None:
        callbacks.append(kscb.FullSizeValidation(inference_model, full_size_model, val_ds, num_classes,
                                                 ignore_label=classes.ignore_label, verbose=cfg.verbose))
    callbacks.append(best)
    if cfg.unfreeze_at_epoch is not None:
        callbacks.append(kscb.UnfreezeEncoder(cfg.unfreeze_at_epoch, verbose=cfg.verbose))
    history_csv = os.path.join(out, "history.csv")
    if initial_epoch:
        trim_csv_log(history_csv, initial_epoch)  # rows of epochs after the backup are written again
    callbacks.append(keras.callbacks.CSVLogger(history_csv, append=initial_epoch > 0))
    if cfg.tensorboard:
        try:
            import tensorboard  # noqa: F401  (tf.summary needs it to write anything)
        except ImportError:
            raise ImportError("Expected the 'tensorboard' package for tensorboard=True (pip install tensorboard). "
                              "Received: tensorboard=True without it installed") from None
        log_dir = os.path.join(out, "tensorboard")
        if initial_epoch:
            trim_event_files(log_dir, initial_epoch, initial_epoch * steps_per_epoch)
        images, labels = next(iter(ksdata.load_dataset(data_format, root, cfg.val_split,
                                                       batch_size=cfg.tensorboard_images, crop_size=(h, w),
                                                       normalization=norm)))
        callbacks += [keras.callbacks.TensorBoard(log_dir=log_dir),
                      kscb.SegmentationTensorBoard(log_dir, images, labels, metadata,
                                                   predict_model=inference_model)]
    if cfg.backup_freq != "none":
        # Last, after the checkpoint callbacks: a backup marks the epoch as done only once everything of it is saved.
        stateful = callbacks + extra_callbacks
        callbacks.append(ExactBackupAndRestore(backup_dir, fingerprint, save_freq=cfg.backup_freq,
                                               callbacks=stateful))
    callbacks += extra_callbacks

    start = time.perf_counter()
    history = model.fit(train_ds, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch,
                        validation_data=val_ds if full_size_model is None else None,
                        callbacks=callbacks, verbose=cfg.verbose)
    seconds = time.perf_counter() - start
    if nan_guard.stopped_at is not None:
        epoch, step, value = nan_guard.stopped_at
        kept = best_path if best.best_epoch is not None else "no checkpoint (no epoch completed)"
        raise TrainingDivergedError(
            f"Training diverged: the loss became {value} at epoch {epoch}, step {step}. Stopped; kept {kept}"
            f"{' and the backup in ' + backup_dir if os.path.isdir(backup_dir) else ''}. "
            f"Try a lower learning rate (lr={cfg.lr}), a warm-up (warmup_epochs) or check the data for "
            f"NaN/Inf values.")
    if not chief:
        shutil.rmtree(out, ignore_errors=True)
    if chief:
        if full_size_model is not None:
            kscb.copy_model_weights(inference_model, full_size_model)
        save_model(saved_model, final_path, metadata=saved_metadata)
    logs = [{k: float(v[i]) for k, v in history.history.items()} for i in range(len(history.epoch))]
    if num_outputs == 2:
        for entry in logs:
            for key in list(entry):
                if key.endswith(f"{model.output_names[0]}_miou"):
                    entry[key.replace(f"{model.output_names[0]}_miou", "miou")] = entry[key]
    return {"best_val_miou": best.best if math.isfinite(best.best) else float("nan"),
            "best_epoch": None if best.best_epoch is None else best.best_epoch + 1,
            "history": logs, "seconds": seconds, "best_path": best_path, "final_path": final_path,
            "num_classes": num_classes, "steps_per_epoch": steps_per_epoch, "initial_epoch": initial_epoch,
            "class_weights": class_weights, "transfer": transfer}
