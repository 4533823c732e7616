"""The QAT recipe on a dataset: recalibration, fine-tuning, int8 export, comparison, bootstrap and report.

`run_qat` takes a trained ``.keras`` model and a dataset (`QATSettings`, the options of ``tools/qat.py``):
optionally the float model's batch-norm statistics are re-estimated (`recalibrate`), the model is made
quantization-aware (`kerasseg.qat.quantize_aware`), fine-tuned on the training split keeping the state, before the
first epoch or after one, that scores best on the validation split, converted to an int8 TFLite file with builtin
operators only (with its metadata sidecar), checked against a target's rules, and scored against the float model
on the validation split with the confusion-matrix code every kerasseg export uses (`compare`). With
``compare_ptq`` the post-training int8 export of the same float model is scored too, and paired bootstraps over the
validation images (`kerasseg.evaluation.paired_bootstrap`) give intervals for QAT minus PTQ and QAT minus float. The
figures are returned as a `QATResult` and written next to the output (`write_report`).

Example::

    from kerasseg.training import recalibrate_batch_norm

    settings = QATSettings("runs/erfnet/best.keras", "runs/synthetic", "runs/erfnet/erfnet_qat_int8.tflite",
                           compare_ptq=True, recalibrate_bn=8)
    result = run_qat(settings, recalibrate_batch_norm=recalibrate_batch_norm)
    print(result.summary())
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from kerasseg.qat.annotation import quantize_aware
from kerasseg.qat.convert import check_target, qat_to_tflite
from kerasseg.qat.fine_tuning import fine_tune, int8_scorer

__all__ = ["QATSettings", "RecalibrationResult", "ComparisonResult", "QATResult", "recalibrate", "compare",
           "write_report", "report_path", "run_qat",
           "SELECT_EPOCH_CHOICES", "TARGET_CHOICES"]

# "none": no selection / no target check.
SELECT_EPOCH_CHOICES = ("int8", "fake-quant", "none")
TARGET_CHOICES = ("none", "cpu", "gpu", "npu")


@dataclasses.dataclass
class QATSettings:
    """What `run_qat` does; the fields are the options of ``tools/qat.py``, with the same defaults.

    Attributes:
        model: trained ``.keras`` file saved by kerasseg (it records its architecture).
        data_dir: dataset root.
        output: destination ``.tflite`` file; the sidecar, the report and the optional PTQ / recalibrated files
            are written beside it.
        dataset: `kerasseg.data.load_dataset` format.
        epochs: QAT fine-tuning epochs.
        steps_per_epoch: batches per epoch (the whole split when ``None``).
        batch_size: training batch size.
        lr: Adam learning rate of the fine-tune.
        class_weights: ``"none" | "median" | "enet" |`` JSON list, as in training; ``None`` takes the training
            run's when the model records it.
        calibration_samples: training images for tensors without a trained range and for the PTQ export.
        max_eval_images: score at most this many validation images.
        target: edge target whose rules the int8 file must pass (``"none"`` skips the check).
        compare_ptq: also export and score post-training int8.
        select_epoch: ``"int8"`` keeps the state whose converted file scores best, ``"fake-quant"`` the one whose
            ``tf_keras`` graph does (faster), ``"none"`` the last epoch.
        recalibrate_bn: training batches on which the float model's batch-norm statistics are first re-estimated
            (0: off).
        seed: shuffling seed.
        verbose: ``fit`` verbosity and progress lines (0, 1 or 2).
        input_format: ``"pixels"`` (uint8 camera frames in, the normalisation in the graph, like the post-training
            int8 export) or ``"normalized"`` (the older contract: int8 normalised images in).
    """

    model: str
    data_dir: str
    output: str
    dataset: str = "synthetic"
    epochs: int = 2
    steps_per_epoch: int | None = None
    batch_size: int = 8
    lr: float = 1e-4
    class_weights: str | None = None
    calibration_samples: int = 50
    max_eval_images: int | None = None
    target: str = "npu"
    compare_ptq: bool = False
    select_epoch: str = "int8"
    recalibrate_bn: int = 0
    seed: int = 0
    verbose: int = 2
    input_format: str = "pixels"

    def validate(self, name=lambda field: field) -> QATSettings:
        """Checks the settings before anything is loaded; ``name`` maps a field to the name the errors use.

        Returns:
            ``self``.

        Raises:
            ValueError: an output that is not a ``.tflite`` path or an out-of-range setting.
            FileNotFoundError: a model file that does not exist.
        """
        if not str(self.output).endswith(".tflite"):
            raise ValueError(f"Expected {name('output')} to be a path ending in '.tflite'. "
                             f"Received: {name('output')}={self.output!r}")
        for field in ("epochs", "batch_size", "calibration_samples"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected {name(field)} to be a positive integer. Received: {name(field)}={value!r}")
        for field in ("steps_per_epoch", "max_eval_images"):
            value = getattr(self, field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"Expected {name(field)} to be a positive integer or None. "
                                 f"Received: {name(field)}={value!r}")
        if isinstance(self.recalibrate_bn, bool) or not isinstance(self.recalibrate_bn, int) or self.recalibrate_bn < 0:
            raise ValueError(f"Expected {name('recalibrate_bn')} to be 0 (off) or a positive number of batches. "
                             f"Received: {name('recalibrate_bn')}={self.recalibrate_bn!r}")
        for field, choices in (("select_epoch", SELECT_EPOCH_CHOICES), ("target", TARGET_CHOICES),
                               ("input_format", ("pixels", "normalized"))):
            if getattr(self, field) not in choices:
                raise ValueError(f"Expected {name(field)} to be one of {list(choices)}. "
                                 f"Received: {name(field)}={getattr(self, field)!r}")
        if not float(self.lr) > 0:
            raise ValueError(f"Expected a positive {name('lr')}. Received: {name('lr')}={self.lr!r}")
        if not os.path.isfile(self.model):
            raise FileNotFoundError(f"Expected {name('model')} to be an existing .keras file. "
                                    f"Received: {name('model')}={self.model!r}")
        return self


@dataclasses.dataclass
class RecalibrationResult:
    """The batch-norm recalibration of the float model before QAT.

    Attributes:
        report: `kerasseg.training.recalibrate_batch_norm`'s report (``layers``, ``batches``, ``images``,
            ``max_mean_shift``).
        float_miou_before: the float model's validation mIoU (0..1) before the recalibration.
        path: where the recalibrated float model was saved.
    """

    report: dict
    float_miou_before: float
    path: str

    def to_dict(self) -> dict:
        return {**self.report, "float_miou_before": self.float_miou_before, "path": self.path}


@dataclasses.dataclass
class ComparisonResult:
    """The QAT file scored against the float model (and the PTQ file) on the same validation images.

    Attributes:
        float_miou, qat_miou: validation mIoU (0..1) of the float model and of the QAT int8 file.
        qat_drop: float minus QAT, in mIoU points.
        num_images: validation images scored.
        ptq_path, ptq_miou, ptq_drop: the post-training int8 file, its mIoU and drop (``None`` without PTQ).
        qat_vs_ptq, qat_vs_float: `kerasseg.evaluation.paired_bootstrap` of QAT minus PTQ and QAT minus float
            (``None`` without PTQ or with a single image).
    """

    float_miou: float
    qat_miou: float
    qat_drop: float
    num_images: int
    ptq_path: str | None = None
    ptq_miou: float | None = None
    ptq_drop: float | None = None
    qat_vs_ptq: dict | None = None
    qat_vs_float: dict | None = None

    def to_dict(self) -> dict:
        out = {"float_miou": self.float_miou, "qat_miou": self.qat_miou, "qat_drop": self.qat_drop,
               "num_images": self.num_images}
        if self.ptq_path is not None:
            out.update(ptq_path=self.ptq_path, ptq_miou=self.ptq_miou, ptq_drop=self.ptq_drop)
        if self.qat_vs_ptq is not None:
            out.update(qat_vs_ptq=self.qat_vs_ptq, qat_vs_float=self.qat_vs_float)
        return out


@dataclasses.dataclass
class QATResult:
    """What `run_qat` did and measured; `to_dict` is the report written next to the output.

    Attributes:
        model, output: the float ``.keras`` file and the QAT ``.tflite`` file.
        epochs, lr: the fine-tune's epochs and learning rate.
        class_weights: the class-weight setting used (``None``: unweighted).
        loss: training loss per epoch.
        comparison: the scores.
        select_epoch: how the kept state was selected (``None``: the last epoch was kept).
        val_miou_per_epoch: the selection scores, epoch 0 being the state before training.
        best_epoch: the kept epoch.
        recalibration: the batch-norm recalibration, if any.
        check: the target check's summary (``None`` without a target).
    """

    model: str
    output: str
    epochs: int
    lr: float
    class_weights: object
    loss: list
    comparison: ComparisonResult
    select_epoch: str | None = None
    val_miou_per_epoch: list | None = None
    best_epoch: int | None = None
    recalibration: RecalibrationResult | None = None
    check: str | None = None

    def to_dict(self) -> dict:
        out = {"model": self.model, "output": self.output, "epochs": self.epochs, "lr": self.lr,
               "class_weights": self.class_weights, "loss": list(self.loss)}
        if self.select_epoch is not None:
            out.update(select_epoch=self.select_epoch, val_miou_per_epoch=self.val_miou_per_epoch,
                       best_epoch=self.best_epoch)
        if self.recalibration is not None:
            out["recalibration"] = self.recalibration.to_dict()
        scores = self.comparison.to_dict()
        out.update({k: scores[k] for k in ("float_miou", "qat_miou", "qat_drop", "num_images")})
        if self.check is not None:
            out["check"] = self.check
        out.update({k: v for k, v in scores.items() if k not in out})
        return out

    def summary(self) -> str:
        """One line: float, QAT and PTQ mIoU with their drops, and the QAT - PTQ interval when measured."""
        c = self.comparison
        line = (f"float mIoU {100 * c.float_miou:.2f}, QAT int8 {100 * c.qat_miou:.2f} "
                f"(drop {c.qat_drop:.2f} points)")
        if c.ptq_miou is not None:
            line += f", PTQ int8 {100 * c.ptq_miou:.2f} (drop {c.ptq_drop:.2f} points)"
        if c.qat_vs_ptq is not None:
            b = c.qat_vs_ptq
            line += (f"; QAT - PTQ {b['difference']:+.2f} points, {100 * b['confidence']:.0f} % interval "
                     f"[{b['low']:+.2f}, {b['high']:+.2f}] over {b['num_images']} images")
        return line


def recalibrate(model, train_data, data, meta, *, batches: int, recalibrate_batch_norm, save_as,
                max_images: int | None = None, verbose: int = 0) -> RecalibrationResult:
    """Re-estimates the float model's batch-norm statistics in place (QAT freezes them) and saves the result.

    Args:
        model: the float Keras 3 model.
        train_data: training batches.
        data: validation ``(normalised image, labels)`` pairs, scored before the recalibration.
        meta: the model's `kerasseg.preprocessing.ModelMetadata` (classes and ignore label).
        batches: training batches used.
        recalibrate_batch_norm: `kerasseg.training.recalibrate_batch_norm`, passed in because the training
            package sits above this one.
        save_as: ``.keras`` path of the recalibrated model.
        max_images: score at most this many validation images.
        verbose: print a line when non-zero.
    """
    from kerasseg.evaluation import evaluate, keras_predict_fn
    from kerasseg.saving import save_model

    before = evaluate(keras_predict_fn(model), data, num_classes=meta.num_classes,
                      ignore_label=meta.ignore_label, max_images=max_images)
    report = dict(recalibrate_batch_norm(model, train_data, steps=batches))
    result = RecalibrationResult(report, float(before.miou), save_model(model, save_as))
    if verbose:
        print(f"recalibrated {report['layers']} batch norms on {report['images']} training images "
              f"(float mIoU before: {100 * before.miou:.2f})")
    return result


def compare(model, qat_path, data, meta, *, ptq_path=None, representative_data=None,
            num_calibration_samples: int = 50, max_images: int | None = None, seed: int = 0) -> ComparisonResult:
    """Scores the QAT file against the float model and, with ``ptq_path``, the post-training int8 export.

    Args:
        model: the float Keras 3 model (the reference).
        qat_path: the QAT ``.tflite`` file.
        data: validation ``(normalised image, labels)`` pairs.
        meta: the model's `kerasseg.preprocessing.ModelMetadata` (classes and ignore label).
        ptq_path: where to write the post-training int8 export of ``model`` (``None``: no PTQ comparison).
        representative_data: calibration images of the PTQ export.
        num_calibration_samples: images drawn from them.
        max_images: score at most this many validation images.
        seed: seed of the paired bootstraps.
    """
    from kerasseg.evaluation import paired_bootstrap
    from kerasseg.evaluation.compare import compare_keras_tflite
    from kerasseg.export.tflite import to_tflite

    scores = compare_keras_tflite(model, qat_path, data, meta.num_classes, meta.ignore_label,
                                  max_images=max_images, per_image=ptq_path is not None)
    result = ComparisonResult(scores["keras_miou"], scores["tflite_miou"], scores["miou_drop"], scores["num_images"])
    if ptq_path is None:
        return result
    to_tflite(model, ptq_path, "int8", representative_data=representative_data,
              num_calibration_samples=num_calibration_samples, metadata=meta, verbose=False)
    ptq = compare_keras_tflite(model, ptq_path, data, meta.num_classes, meta.ignore_label,
                               max_images=max_images, per_image=True)
    result.ptq_path, result.ptq_miou, result.ptq_drop = ptq_path, ptq["tflite_miou"], ptq["miou_drop"]
    # A few tenths of a point between two int8 files can be the luck of the validation scenes: the paired bootstrap
    # over the same images says which.
    if scores["num_images"] > 1:
        result.qat_vs_ptq = paired_bootstrap(scores["tflite_confusions"], ptq["tflite_confusions"], seed=seed)
        result.qat_vs_float = paired_bootstrap(scores["tflite_confusions"], scores["keras_confusions"], seed=seed)
    return result


def report_path(output) -> str:
    """The report written next to a QAT file: ``model.tflite`` -> ``model.report.json``."""
    return os.path.splitext(os.fspath(output))[0] + ".report.json"


def write_report(result: QATResult, path=None) -> str:
    """Writes ``result.to_dict()`` as JSON, atomically, to ``path`` (`report_path` of the output by default)."""
    from kerasseg.saving import atomic_path

    path = report_path(result.output) if path is None else os.fspath(path)
    with atomic_path(path, suffix=".json") as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(result.to_dict(), f, indent=2)
    return path


def run_qat(settings: QATSettings, *, recalibrate_batch_norm=None) -> QATResult:
    """Runs the QAT recipe (see the module docstring) and writes its report next to ``settings.output``.

    Args:
        settings: what to do.
        recalibrate_batch_norm: `kerasseg.training.recalibrate_batch_norm`, required when
            ``settings.recalibrate_bn`` is set (the training package sits above this one, so it is passed in).

    Returns:
        The `QATResult`.

    Raises:
        ValueError, FileNotFoundError: invalid settings (see `QATSettings.validate`).
    """
    from kerasseg import data as ksdata
    from kerasseg.data.class_weights import resolve_class_weights
    from kerasseg.export.datasets import export_data
    from kerasseg.saving import load_model

    settings.validate()
    if settings.recalibrate_bn and recalibrate_batch_norm is None:
        raise ValueError(f"Expected recalibrate_batch_norm (kerasseg.training.recalibrate_batch_norm) with "
                         f"recalibrate_bn > 0. Received: recalibrate_bn={settings.recalibrate_bn}, "
                         f"recalibrate_batch_norm=None")
    s = settings
    model = load_model(s.model)
    meta, calibration, eval_data = export_data(model, s.dataset, s.data_dir, seed=s.seed)
    height, width = meta.input_shape[:2]
    train = ksdata.load_dataset(s.dataset, s.data_dir, "train", batch_size=s.batch_size, crop_size=(height, width),
                                augment=True, shuffle=True, seed=s.seed,
                                normalization=(list(meta.mean), list(meta.std)), repeat=s.steps_per_epoch is not None)
    calib = [np.asarray(image) for image, _ in calibration.take(s.calibration_samples)]
    weights_spec = s.class_weights
    if weights_spec is None:
        weights_spec = (meta.extra.get("training") or {}).get("class_weights")
    class_weights = resolve_class_weights(weights_spec, s.data_dir, meta.num_classes,
                                          "folder" if s.dataset == "synthetic" else s.dataset)

    recalibration = None
    if s.recalibrate_bn:
        recalibration = recalibrate(model, train, eval_data, meta, batches=s.recalibrate_bn,
                                    recalibrate_batch_norm=recalibrate_batch_norm,
                                    save_as=os.path.splitext(s.output)[0] + "_recalibrated.keras",
                                    max_images=s.max_eval_images, verbose=s.verbose)
    qat_model = quantize_aware(model, representative_data=calib, num_calibration_samples=s.calibration_samples)
    scorer = None
    if s.select_epoch == "int8":
        scorer = int8_scorer(eval_data, meta.num_classes, meta.ignore_label, representative_data=calib,
                             num_calibration_samples=s.calibration_samples, max_images=s.max_eval_images)
    history = fine_tune(qat_model, train, epochs=s.epochs, learning_rate=s.lr, steps_per_epoch=s.steps_per_epoch,
                        ignore_label=meta.ignore_label, class_weights=class_weights, verbose=s.verbose,
                        score=scorer, validation_data=eval_data if s.select_epoch == "fake-quant" else None,
                        num_classes=meta.num_classes, max_images=s.max_eval_images)
    target = None if s.target == "none" else s.target
    qat_to_tflite(qat_model, s.output, metadata=meta, representative_data=calib,
                  num_calibration_samples=s.calibration_samples, target=target, input_format=s.input_format)
    comparison = compare(model, s.output, eval_data, meta,
                         ptq_path=os.path.splitext(s.output)[0] + "_ptq.tflite" if s.compare_ptq else None,
                         representative_data=calib, num_calibration_samples=s.calibration_samples,
                         max_images=s.max_eval_images, seed=s.seed)
    selecting = s.select_epoch != "none"
    result = QATResult(
        model=s.model, output=s.output, epochs=s.epochs, lr=s.lr, class_weights=weights_spec,
        loss=[float(v) for v in history.get("loss", [])], comparison=comparison,
        select_epoch=s.select_epoch if selecting else None,
        val_miou_per_epoch=history["val_miou_per_epoch"] if selecting else None,
        best_epoch=history["best_epoch"] if selecting else None, recalibration=recalibration,
        check=None if target is None else check_target(s.output, target).summary())
    write_report(result)
    return result
