"""The data an export needs, drawn from the user's own dataset pipeline with the model's own preprocessing."""

from __future__ import annotations

import sys

__all__ = ["export_data"]


def export_data(model, dataset_format: str, root, *, calibration: bool = True, calibration_split: str = "train",
                eval_split: str = "val", seed: int = 0, metadata=None):
    """Metadata, calibration and evaluation pipelines for exporting ``model``.

    Both pipelines come from `kerasseg.data.load_dataset` with batch size 1, no augmentation and the mean / std
    recorded in the model, so calibration sees exactly what the deployed model will. The calibration split is
    shuffled (with ``seed``) so that the first samples cover the split rather than its first files; the
    evaluation split is not. Class names, palette and ignore label are taken from the dataset (its format's classes)
    when the model does not record them and the class count matches.

    Args:
        model: the Keras model or the path of its ``.keras`` file (its ``kerasseg_metadata`` gives the
            normalisation; ImageNet's otherwise, with a warning).
        dataset_format: a `kerasseg.data.load_dataset` format (``"folder"``, ``"synthetic"``, ...).
        root: the dataset folder.
        calibration: build the calibration pipeline (``None`` is returned in its place otherwise).
        calibration_split, eval_split: split names.
        seed: shuffling seed of the calibration split.
        metadata: overrides the model's metadata.

    Returns:
        ``(metadata, calibration dataset or None, evaluation dataset)``.
    """
    from kerasseg import data as ksdata
    from kerasseg.export.options import export_metadata
    from kerasseg.saving import resolve_model

    model = resolve_model(model)
    if metadata is None and getattr(model, "kerasseg_metadata", None) is None:
        print(f"warning: model {model.name!r} carries no kerasseg metadata; assuming ImageNet normalisation",
              file=sys.stderr)
    metadata = export_metadata(model, metadata)
    norm = (list(metadata.mean), list(metadata.std))
    calibration_data = None
    if calibration:
        calibration_data = ksdata.load_dataset(dataset_format, root, calibration_split, batch_size=1, augment=False,
                                               normalization=norm, shuffle=True, seed=seed)
    eval_data = ksdata.load_dataset(dataset_format, root, eval_split, batch_size=1, augment=False,
                                    normalization=norm, shuffle=False)
    # After load_dataset: a synthetic dataset is only written on first use.
    try:
        from kerasseg.data.formats import resolve

        classes = resolve(dataset_format, root, eval_split, check_sizes=False).classes
    except (FileNotFoundError, ValueError, OSError):
        classes = None
    if classes is not None and len(classes.names) == metadata.num_classes:
        metadata = metadata.with_dataset(
            class_names=metadata.class_names or list(classes.names),
            palette=metadata.palette or (list(classes.colors) if classes.colors else None),
            ignore_label=classes.ignore_label)
    return metadata, calibration_data, eval_data
