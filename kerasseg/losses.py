"""Losses for dense labels, all honouring the ignore label.

Every loss takes logits ``(B, H, W, C)`` and integer labels ``(B, H, W)`` (or ``(B, H, W, 1)``), skips pixels whose
label is the ignore label or outside ``[0, C)``, and computes in float32 even when the model runs in mixed precision.

Keras' ``class_weight`` argument does not support dense (per-pixel) targets, so class weights are applied per pixel
inside the loss.

`get_loss` builds any of them, or a weighted sum, from a short string such as ``"ce+0.5*lovasz"``.
"""

from __future__ import annotations

import inspect
import math

import keras
import tensorflow as tf

__all__ = ["SparseCategoricalCrossentropyIgnore", "OHEMCrossEntropy", "DiceLoss", "FocalLoss", "LovaszSoftmax",
           "CombinedLoss", "LOSSES", "get_loss"]


def _flatten_labels(y_true, y_pred):
    """Labels as int32 with the spatial shape of the logits (drops a trailing channel of size 1)."""
    y_true = tf.convert_to_tensor(y_true)
    if y_true.shape.rank == y_pred.shape.rank:
        y_true = tf.squeeze(y_true, axis=-1)
    return tf.cast(y_true, tf.int32)


@keras.saving.register_keras_serializable(package="kerasseg")
class SparseCategoricalCrossentropyIgnore(keras.losses.Loss):
    """Softmax cross-entropy over logits that skips ignored pixels, averaged over the valid pixels of the batch.

    With ``class_weights`` the pixel losses are weighted by the weight of their true class and normalised by the sum
    of weights of the valid pixels (the weighted mean, as in PyTorch's ``CrossEntropyLoss(weight=...)``).

    Args:
        ignore_label: label value excluded from the loss (also any label outside ``[0, num_classes)``).
        class_weights: optional per-class weights (length ``num_classes``).
        from_logits: must be ``True`` (kerasseg models output logits); kept for API familiarity.
        name: loss name.
        reduction: Keras reduction; the default averages over the batch, which together with the internal
            normalisation gives the mean over all valid pixels of the batch.
    """

    def __init__(self, ignore_label: int = 255, class_weights=None, from_logits: bool = True,
                 name: str = "sparse_categorical_crossentropy_ignore", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if not from_logits:
            raise ValueError("Expected from_logits=True: kerasseg models output logits. Received: from_logits=False")
        self.ignore_label = int(ignore_label)
        self.from_logits = True
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        if self.class_weights is not None and any(w < 0 for w in self.class_weights):
            raise ValueError(f"Expected non-negative class_weights. Received: class_weights={self.class_weights}")

    def call(self, y_true, y_pred):
        y_pred = tf.convert_to_tensor(y_pred)
        num_classes = y_pred.shape[-1]
        labels = _flatten_labels(y_true, y_pred)
        valid = tf.logical_and(tf.logical_and(labels >= 0, labels < num_classes),
                               tf.not_equal(labels, self.ignore_label))
        safe = tf.where(valid, labels, tf.zeros_like(labels))
        # Cross-entropy in float32 even under mixed precision: float16 logits overflow in the softmax.
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe, logits=tf.cast(y_pred, tf.float32))
        weights = tf.cast(valid, tf.float32)
        if self.class_weights is not None:
            if len(self.class_weights) != num_classes:
                raise ValueError(f"Expected {num_classes} class_weights (one per class of the logits). "
                                 f"Received: {len(self.class_weights)}")
            weights *= tf.gather(tf.constant(self.class_weights, tf.float32), safe)
        # The Keras reduction divides by the number of elements; rescale so the result is the (weighted) mean over
        # valid pixels of the whole batch rather than a mean of per-image means.
        total = tf.cast(tf.size(weights), tf.float32)
        norm = total / tf.maximum(tf.reduce_sum(weights), 1e-6)
        return ce * weights * norm

    def get_config(self):
        config = super().get_config()
        config.update(ignore_label=self.ignore_label, class_weights=self.class_weights, from_logits=self.from_logits)
        return config


# --------------------------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------------------------

def _logits_labels_valid(y_true, y_pred, ignore_label: int):
    """Float32 logits ``(..., C)``, int32 labels made safe for gathers, the valid mask and ``C``.

    Invalid pixels (the ignore label and any label outside ``[0, C)``) get label 0 in the returned labels, so they
    can be gathered and one-hot encoded; every loss masks them out with ``valid``.
    """
    # float32 even under mixed precision: float16 softmax / log / cumsum lose too much precision.
    logits = tf.cast(tf.convert_to_tensor(y_pred), tf.float32)
    if logits.shape.rank is None or logits.shape.rank < 2:
        raise ValueError(f"Expected logits of shape (batch, ..., num_classes). Received: y_pred of shape "
                         f"{logits.shape}")
    num_classes = logits.shape[-1]
    if num_classes is None:
        raise ValueError("Expected logits with a static number of classes (last axis). Received: y_pred of shape "
                         f"{logits.shape}")
    labels = _flatten_labels(y_true, logits)
    if labels.shape.is_fully_defined() and logits.shape[:-1].is_fully_defined() \
            and labels.shape != logits.shape[:-1]:
        raise ValueError(f"Expected labels of shape {logits.shape[:-1]} (the logits' shape without the class axis). "
                         f"Received: y_true of shape {labels.shape}")
    valid = (labels >= 0) & (labels < num_classes) & tf.not_equal(labels, ignore_label)
    safe = tf.where(valid, labels, tf.zeros_like(labels))
    return logits, safe, valid, int(num_classes)


def _check_class_weights(class_weights, arg: str = "class_weights"):
    if class_weights is None:
        return None
    try:
        weights = [float(w) for w in class_weights]
    except (TypeError, ValueError):
        raise ValueError(f"Expected {arg} to be a list of non-negative numbers. Received: {arg}={class_weights!r}") \
            from None
    if not weights or any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"Expected {arg} to be a non-empty list of finite, non-negative numbers. "
                         f"Received: {arg}={weights}")
    return weights


def _non_negative(value, arg: str) -> float:
    if not (math.isfinite(float(value)) and float(value) >= 0):
        raise ValueError(f"Expected {arg} to be a finite number >= 0. Received: {arg}={value!r}")
    return float(value)


def _class_weight_vector(weights, num_classes: int, arg: str = "class_weights"):
    if len(weights) != num_classes:
        raise ValueError(f"Expected {num_classes} {arg} (one per class of the logits). Received: {len(weights)}")
    return tf.constant(weights, tf.float32)


class _BatchLoss(keras.losses.Loss):
    """Base of the losses that are a single number per batch (they do not decompose into per-pixel terms).

    ``call`` returns the batch loss as a length-1 vector rather than a scalar, so that Keras' reduction scales it
    under ``tf.distribute`` like any per-pixel loss (Keras leaves scalars unscaled); with the default reduction the
    loss object still returns a scalar. Per-sample weights have no meaning for a batch-level loss and are rejected;
    use the class weights instead.
    """

    # The constructor arguments that ``get_config`` records besides Keras' own, stored as attributes of that name.
    config_keys: tuple = ()

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError(f"Expected sample_weight=None: {type(self).__name__} is computed over the whole batch "
                             f"and cannot weight samples (use class weights). Received: a sample_weight")
        return super().__call__(y_true, y_pred)

    def call(self, y_true, y_pred):
        return tf.reshape(self.batch_loss(y_true, y_pred), [1])

    def batch_loss(self, y_true, y_pred):
        """The loss of the batch as a float32 scalar."""
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config.update({key: getattr(self, key) for key in self.config_keys})
        return config


# --------------------------------------------------------------------------------------------------------------
# OHEM cross-entropy
# --------------------------------------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="kerasseg")
class OHEMCrossEntropy(_BatchLoss):
    """Cross-entropy with online hard example mining over pixels.

    Follows the OHEM softmax loss of the PSPNet / ICNet training code (Zhao et al., "Pyramid Scene Parsing Network",
    CVPR 2017; Zhao et al., "ICNet for Real-Time Semantic Segmentation on High-Resolution Images", ECCV 2018), itself
    after Shrivastava et al., "Training Region-based Object Detectors with Online Hard Example Mining", CVPR 2016:
    pixels whose softmax probability of the true class is at most ``threshold`` are kept; when fewer than
    ``min_kept`` valid pixels of the batch qualify, the threshold is raised to the probability of the
    ``min_kept``-th hardest valid pixel, so at least ``min_kept`` pixels (all valid pixels if there are fewer) are
    kept. The loss is the (class-weighted) mean cross-entropy over the kept pixels; the selection itself carries no
    gradient.

    Args:
        ignore_label: label value excluded from the loss (also any label outside ``[0, num_classes)``).
        threshold: probability of the true class below which a pixel counts as hard, in ``(0, 1]``.
        min_kept: minimum number of pixels kept per batch (``0`` keeps exactly the pixels under the threshold).
        class_weights: optional per-class weights (length ``num_classes``); the mean over kept pixels is then
            weighted by the weight of each pixel's true class.
        name: loss name.
        reduction: Keras reduction (the default returns the batch loss as a scalar).
        dtype: Keras loss dtype; the computation itself always runs in float32.
    """

    config_keys = ("ignore_label", "threshold", "min_kept", "class_weights")

    def __init__(self, ignore_label: int = 255, threshold: float = 0.7, min_kept: int = 100000, class_weights=None,
                 name: str = "ohem_cross_entropy", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.ignore_label = int(ignore_label)
        if not 0.0 < float(threshold) <= 1.0:
            raise ValueError(f"Expected threshold in (0, 1]. Received: threshold={threshold!r}")
        self.threshold = float(threshold)
        if (isinstance(min_kept, bool) or not isinstance(min_kept, (int, float)) or int(min_kept) != min_kept
                or int(min_kept) < 0):
            raise ValueError(f"Expected min_kept to be a non-negative integer. Received: min_kept={min_kept!r}")
        self.min_kept = int(min_kept)
        self.class_weights = _check_class_weights(class_weights)

    def batch_loss(self, y_true, y_pred):
        logits, labels, valid, num_classes = _logits_labels_valid(y_true, y_pred, self.ignore_label)
        logits = tf.reshape(logits, [-1, num_classes])
        labels = tf.reshape(labels, [-1])
        valid = tf.reshape(valid, [-1])
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        # Selection only: no gradient flows through which pixels are kept.
        prob = tf.stop_gradient(tf.exp(-ce))
        # Invalid pixels get a probability above any real one, so they are never among the hardest.
        prob = tf.where(valid, prob, tf.fill(tf.shape(prob), 2.0))
        k = tf.minimum(self.min_kept, tf.size(prob))
        # The k smallest probabilities are the k largest of -prob; the k-th smallest is their minimum negated
        # (-inf for k = 0, which leaves the threshold unchanged).
        kth_smallest = -tf.reduce_min(tf.math.top_k(-prob, k=k, sorted=False).values)
        # Fewer valid pixels than min_kept: kth_smallest is 2, and every valid pixel is kept.
        threshold = tf.maximum(tf.constant(self.threshold, tf.float32), kth_smallest)
        weights = tf.cast(valid & (prob <= threshold), tf.float32)
        if self.class_weights is not None:
            weights *= tf.gather(_class_weight_vector(self.class_weights, num_classes), labels)
        return tf.math.divide_no_nan(tf.reduce_sum(ce * weights), tf.reduce_sum(weights))


# --------------------------------------------------------------------------------------------------------------
# Dice
# --------------------------------------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="kerasseg")
class DiceLoss(_BatchLoss):
    """Soft multi-class Dice loss on softmax probabilities.

    Milletari et al., "V-Net: Fully Convolutional Neural Networks for Volumetric Medical Image Segmentation", 3DV
    2016, extended to several classes (Sudre et al., "Generalised Dice overlap as a deep learning loss function for
    highly unbalanced segmentations", DLMIA 2017). Over the valid pixels of the batch, for each class ``c`` with
    probabilities ``p_c`` and one-hot targets ``g_c``::

        dice_c = (2 * sum(p_c * g_c) + smooth) / (sum(p_c) + sum(g_c) + smooth)

    and the loss is ``1 - mean(dice_c)`` over the classes present in the targets of the batch (weighted by
    ``class_weights`` when given); a batch without valid pixels has loss 0.

    Args:
        ignore_label: label value excluded from the loss (also any label outside ``[0, num_classes)``).
        smooth: additive smoothing of numerator and denominator (> 0 keeps the loss defined and smooth).
        class_weights: optional per-class weights of the mean over classes.
        name: loss name.
        reduction: Keras reduction (the default returns the batch loss as a scalar).
        dtype: Keras loss dtype; the computation itself always runs in float32.
    """

    config_keys = ("ignore_label", "smooth", "class_weights")

    def __init__(self, ignore_label: int = 255, smooth: float = 1.0, class_weights=None, name: str = "dice_loss",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.ignore_label = int(ignore_label)
        self.smooth = _non_negative(smooth, "smooth")
        self.class_weights = _check_class_weights(class_weights)

    def batch_loss(self, y_true, y_pred):
        logits, labels, valid, num_classes = _logits_labels_valid(y_true, y_pred, self.ignore_label)
        mask = tf.cast(valid, tf.float32)[..., None]
        probs = tf.nn.softmax(logits, axis=-1) * mask
        onehot = tf.one_hot(labels, num_classes, dtype=tf.float32) * mask
        axes = list(range(logits.shape.rank - 1))
        intersection = tf.reduce_sum(probs * onehot, axis=axes)
        target = tf.reduce_sum(onehot, axis=axes)
        denominator = tf.reduce_sum(probs, axis=axes) + target
        dice = (2.0 * intersection + self.smooth) / tf.maximum(denominator + self.smooth, 1e-12)
        weights = tf.cast(target > 0, tf.float32)
        if self.class_weights is not None:
            weights *= _class_weight_vector(self.class_weights, num_classes)
        mean_dice = tf.math.divide_no_nan(tf.reduce_sum(weights * dice), tf.reduce_sum(weights))
        return tf.where(tf.reduce_sum(weights) > 0, 1.0 - mean_dice, 0.0)


# --------------------------------------------------------------------------------------------------------------
# Focal
# --------------------------------------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="kerasseg")
class FocalLoss(_BatchLoss):
    """Softmax focal loss, averaged over the valid pixels of the batch.

    Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017: with ``p_t`` the softmax probability of the
    true class, each pixel contributes ``-alpha_t * (1 - p_t) ** gamma * log(p_t)``, which down-weights the easy,
    well-classified pixels. ``gamma = 0`` and no ``alpha`` give plain cross-entropy.

    Args:
        ignore_label: label value excluded from the loss (also any label outside ``[0, num_classes)``).
        gamma: focusing parameter, >= 0.
        alpha: balancing factor: ``None`` (1 for every class), one number for every class, or one weight per class.
        name: loss name.
        reduction: Keras reduction (the default returns the batch loss as a scalar).
        dtype: Keras loss dtype; the computation itself always runs in float32.
    """

    config_keys = ("ignore_label", "gamma", "alpha")

    def __init__(self, ignore_label: int = 255, gamma: float = 2.0, alpha=None, name: str = "focal_loss",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.ignore_label = int(ignore_label)
        self.gamma = _non_negative(gamma, "gamma")
        if alpha is None or isinstance(alpha, (list, tuple)):
            self.alpha = _check_class_weights(alpha, "alpha")
        else:
            self.alpha = _check_class_weights([alpha], "alpha")[0]

    def batch_loss(self, y_true, y_pred):
        logits, labels, valid, num_classes = _logits_labels_valid(y_true, y_pred, self.ignore_label)
        log_pt = tf.gather(tf.nn.log_softmax(logits, axis=-1), labels[..., None], batch_dims=labels.shape.rank)[..., 0]
        pt = tf.exp(log_pt)
        # The floor keeps the gradient of (1 - p_t) ** gamma finite for gamma < 1 when p_t rounds to 1; its effect
        # on the value is at most 1e-12 ** gamma * |log p_t|, i.e. nothing.
        modulating = tf.pow(tf.maximum(1.0 - pt, 1e-12), self.gamma) if self.gamma else tf.ones_like(pt)
        loss = -modulating * log_pt
        if isinstance(self.alpha, list):
            loss *= tf.gather(_class_weight_vector(self.alpha, num_classes, "alpha"), labels)
        elif self.alpha is not None:
            loss *= self.alpha
        mask = tf.cast(valid, tf.float32)
        return tf.math.divide_no_nan(tf.reduce_sum(loss * mask), tf.reduce_sum(mask))


# --------------------------------------------------------------------------------------------------------------
# Lovász-Softmax
# --------------------------------------------------------------------------------------------------------------

def _lovasz_grad(gt_sorted):
    """Gradient of the Lovász extension of the Jaccard loss w.r.t. errors sorted in decreasing order.

    ``gt_sorted`` is ``(..., P)`` of 0/1 foreground indicators in the order of decreasing errors (Berman et al.,
    Algorithm 1); the result has the same shape.
    """
    gts = tf.reduce_sum(gt_sorted, axis=-1, keepdims=True)
    intersection = gts - tf.cumsum(gt_sorted, axis=-1)
    union = gts + tf.cumsum(1.0 - gt_sorted, axis=-1)
    # union >= 1 everywhere: at position i either a background pixel has been seen or gts >= cumsum(gt) >= 1.
    jaccard = 1.0 - intersection / tf.maximum(union, 1.0)
    return tf.concat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], axis=-1)


@keras.saving.register_keras_serializable(package="kerasseg")
class LovaszSoftmax(_BatchLoss):
    """Lovász-Softmax loss: a convex surrogate of the mean Jaccard (IoU) loss on softmax probabilities.

    Berman, Rannen Triki and Blaschko, "The Lovász-Softmax loss: A tractable surrogate for the optimization of the
    intersection-over-union measure in neural networks", CVPR 2018. For each class the pixel errors
    ``|onehot_c - p_c|`` over the valid pixels are sorted in decreasing order and dotted with the gradient of the
    Lovász extension of the Jaccard loss (computed from the sorted ground truth with cumulative sums); the loss is
    the mean over the classes. As in the authors' reference code, a set of pixels without valid pixels (or, with
    ``classes="present"``, without any present class) contributes 0.

    Args:
        ignore_label: label value excluded from the loss (also any label outside ``[0, num_classes)``).
        per_image: compute the loss per image and average over the batch, instead of over the batch as a whole.
        classes: ``"present"`` (average over the classes present in the targets), ``"all"`` (every class), or a
            list of class indices to average over.
        name: loss name.
        reduction: Keras reduction (the default returns the batch loss as a scalar).
        dtype: Keras loss dtype; the computation itself always runs in float32.
    """

    config_keys = ("ignore_label", "per_image", "classes")

    def __init__(self, ignore_label: int = 255, per_image: bool = False, classes="present",
                 name: str = "lovasz_softmax", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.ignore_label = int(ignore_label)
        self.per_image = bool(per_image)
        if isinstance(classes, str):
            if classes not in ("present", "all"):
                raise ValueError(f"Expected classes to be 'present', 'all' or a list of class indices. "
                                 f"Received: classes={classes!r}")
            self.classes = classes
        else:
            try:
                self.classes = [int(c) for c in classes]
            except (TypeError, ValueError):
                raise ValueError(f"Expected classes to be 'present', 'all' or a list of class indices. "
                                 f"Received: classes={classes!r}") from None
            if not self.classes or any(c < 0 for c in self.classes):
                raise ValueError(f"Expected a non-empty list of non-negative class indices. "
                                 f"Received: classes={self.classes}")

    def batch_loss(self, y_true, y_pred):
        logits, labels, valid, num_classes = _logits_labels_valid(y_true, y_pred, self.ignore_label)
        if isinstance(self.classes, list) and max(self.classes) >= num_classes:
            raise ValueError(f"Expected class indices below num_classes={num_classes}. "
                             f"Received: classes={self.classes}")
        probs = tf.nn.softmax(logits, axis=-1)
        groups = tf.shape(logits)[0] if self.per_image else 1
        # (groups, C, P): one row of pixels per class, per image or for the whole batch.
        probs = tf.transpose(tf.reshape(probs, [groups, -1, num_classes]), [0, 2, 1])
        labels = tf.reshape(labels, [groups, 1, -1])
        valid = tf.reshape(valid, [groups, 1, -1])
        fg = tf.cast(tf.equal(labels, tf.range(num_classes)[None, :, None]), tf.float32)
        fg *= tf.cast(valid, tf.float32)
        # Invalid pixels get error -1 so the sort puts them after every valid pixel (errors are >= 0): they then
        # change neither the order nor the cumulative sums seen by the valid pixels, and are masked from the dot.
        errors = tf.where(valid, tf.abs(fg - probs), -1.0)
        order = tf.argsort(tf.stop_gradient(errors), axis=-1, direction="DESCENDING", stable=True)
        errors_sorted = tf.gather(errors, order, batch_dims=2)
        fg_sorted = tf.gather(fg, order, batch_dims=2)
        valid_sorted = tf.gather(tf.cast(tf.broadcast_to(valid, tf.shape(errors)), tf.float32), order, batch_dims=2)
        per_class = tf.reduce_sum(errors_sorted * valid_sorted * _lovasz_grad(fg_sorted), axis=-1)  # (groups, C)
        if self.classes == "present":
            selected = tf.cast(tf.reduce_sum(fg, axis=-1) > 0, tf.float32)
        elif self.classes == "all":
            selected = tf.ones_like(per_class)
        else:
            selected = tf.tile(tf.reduce_max(tf.one_hot(self.classes, num_classes), axis=0)[None], [groups, 1])
        per_group = tf.math.divide_no_nan(tf.reduce_sum(per_class * selected, axis=-1),
                                          tf.reduce_sum(selected, axis=-1))
        return tf.reduce_mean(per_group)


# --------------------------------------------------------------------------------------------------------------
# Weighted sums and the factory
# --------------------------------------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="kerasseg")
class CombinedLoss(_BatchLoss):
    """Weighted sum of losses, e.g. cross-entropy plus a Lovász or Dice term.

    Each term is the loss's own value with the default (mean) reduction, so the reductions configured on the
    sub-losses are not used; the sum is reduced once, by this loss.

    Args:
        losses: ``keras.losses.Loss`` instances, or their serialised form
            (``keras.saving.serialize_keras_object``).
        weights: one finite, non-negative weight per loss (all 1 when omitted).
        name: loss name.
        reduction: Keras reduction (the default returns the batch loss as a scalar).
        dtype: Keras loss dtype.
    """

    def __init__(self, losses, weights=None, name: str = "combined_loss", reduction="sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if isinstance(losses, (keras.losses.Loss, dict, str)) or not losses:
            raise ValueError(f"Expected losses to be a non-empty list of keras.losses.Loss objects. "
                             f"Received: losses={losses!r}")
        self.losses = []
        for i, loss in enumerate(losses):
            if isinstance(loss, dict):
                loss = keras.saving.deserialize_keras_object(loss)
            if not isinstance(loss, keras.losses.Loss):
                raise ValueError(f"Expected every entry of losses to be a keras.losses.Loss. "
                                 f"Received: losses[{i}]={loss!r}")
            self.losses.append(loss)
        weights = [1.0] * len(self.losses) if weights is None else list(weights)
        if len(weights) != len(self.losses):
            raise ValueError(f"Expected one weight per loss ({len(self.losses)}). Received: weights={weights}")
        self.weights = _check_class_weights(weights, "weights")

    def batch_loss(self, y_true, y_pred):
        total = tf.constant(0.0, tf.float32)
        for loss, weight in zip(self.losses, self.weights):
            # The mean of each term's unreduced values is its default-reduction value (per-pixel terms are
            # normalised inside `call`), without the per-replica scaling that would otherwise be applied twice.
            total += weight * tf.reduce_mean(tf.cast(loss.call(y_true, y_pred), tf.float32))
        return total

    def get_config(self):
        config = super().get_config()
        config.update(losses=[keras.saving.serialize_keras_object(loss) for loss in self.losses],
                      weights=self.weights)
        return config


LOSSES = {
    "ce": SparseCategoricalCrossentropyIgnore,
    "ohem": OHEMCrossEntropy,
    "dice": DiceLoss,
    "focal": FocalLoss,
    "lovasz": LovaszSoftmax,
}


def _parse_terms(spec: str) -> list[tuple[float, str]]:
    terms = []
    for raw in spec.split("+"):
        term = raw.strip().lower()
        weight = 1.0
        if "*" in term:
            left, _, right = (part.strip() for part in term.partition("*"))
            number, name = (left, right) if right in LOSSES else (right, left)
            try:
                weight = float(number)
            except ValueError:
                raise ValueError(f"Expected a loss term as NAME or WEIGHT*NAME with a number as WEIGHT. "
                                 f"Received: {raw.strip()!r} in name_or_spec={spec!r}") from None
            term = name
        if term not in LOSSES:
            raise ValueError(f"Unknown loss {term!r}. Expected one of {sorted(LOSSES)} or a weighted sum such as "
                             f"'ce+0.5*lovasz'. Received: name_or_spec={spec!r}")
        terms.append((weight, term))
    return terms


def get_loss(name_or_spec, **kwargs) -> keras.losses.Loss:
    """Builds a loss from a short name or a weighted sum of names.

    Known names: ``"ce"`` (`SparseCategoricalCrossentropyIgnore`), ``"ohem"`` (`OHEMCrossEntropy`), ``"dice"``
    (`DiceLoss`), ``"focal"`` (`FocalLoss`) and ``"lovasz"`` (`LovaszSoftmax`). Sums such as ``"ce+dice"`` or
    ``"ce+0.5*lovasz"`` give a `CombinedLoss`.

    Args:
        name_or_spec: a name, a sum of (optionally weighted) names, or a ``keras.losses.Loss`` (returned as is).
        **kwargs: constructor arguments; in a sum each goes to every term that accepts it (e.g. ``ignore_label`` to
            all of them, ``alpha`` to the focal term only).

    Returns:
        The loss object.

    Raises:
        ValueError: an unknown name or a malformed sum (the message lists the known names).
        TypeError: a keyword argument that no term accepts.
    """
    if isinstance(name_or_spec, keras.losses.Loss):
        if kwargs:
            raise TypeError(f"Expected no keyword arguments with a loss object. Received: {sorted(kwargs)}")
        return name_or_spec
    if not isinstance(name_or_spec, str) or not name_or_spec.strip():
        raise ValueError(f"Expected a loss name (one of {sorted(LOSSES)}) or a sum such as 'ce+0.5*lovasz'. "
                         f"Received: name_or_spec={name_or_spec!r}")
    terms = _parse_terms(name_or_spec)
    accepted = {name: set(inspect.signature(LOSSES[name].__init__).parameters) - {"self", "name"}
                for _, name in terms}
    unused = sorted(k for k in kwargs if not any(k in params for params in accepted.values()))
    if unused:
        raise TypeError(f"get_loss({name_or_spec!r}) got keyword argument(s) {unused} that no term accepts. "
                        f"Expected any of {sorted(set().union(*accepted.values()))}.")
    losses = [LOSSES[name](**{k: v for k, v in kwargs.items() if k in accepted[name]}) for _, name in terms]
    if len(terms) == 1 and terms[0][0] == 1.0:
        return losses[0]
    return CombinedLoss(losses, [weight for weight, _ in terms])
