"""Palettes, colour label maps, overlays and confusion-matrix heat maps, drawn with numpy and PIL only.

The default palette is the PASCAL VOC colour map (Everingham et al.), the same one the device runtime in
``tflite/runtime.py`` uses, so a model without a palette in its metadata is drawn identically everywhere.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["default_palette", "resolve_palette", "colorize", "overlay", "denormalize", "label_image", "save_image",
           "confusion_matrix_image", "save_confusion_png", "dataset_grid"]


def default_palette(num_classes: int) -> np.ndarray:
    """The PASCAL VOC colour map (bit-interleaved class index), ``(num_classes, 3)`` uint8."""
    if int(num_classes) < 0:
        raise ValueError(f"Expected num_classes >= 0. Received: num_classes={num_classes!r}")
    palette = np.zeros((int(num_classes), 3), np.uint8)
    for c in range(len(palette)):
        r = g = b = 0
        v = c
        for shift in range(7, -1, -1):
            r |= (v & 1) << shift
            g |= ((v >> 1) & 1) << shift
            b |= ((v >> 2) & 1) << shift
            v >>= 3
        palette[c] = (r, g, b)
    return palette


def resolve_palette(palette=None, num_classes: int | None = None) -> np.ndarray:
    """``palette`` as a validated ``(N, 3)`` uint8 array, or the default palette of ``num_classes`` when ``None``.

    Raises:
        ValueError: a malformed palette, or fewer colours than ``num_classes``.
    """
    if palette is None:
        if num_classes is None:
            raise ValueError("Expected a palette or num_classes. Received: palette=None, num_classes=None")
        return default_palette(num_classes)
    array = np.asarray(palette)
    if array.ndim != 2 or array.shape[1] != 3 or len(array) == 0:
        raise ValueError(f"Expected palette to be a list of [r, g, b] colours. Received: palette of shape "
                         f"{array.shape}")
    if np.any(array < 0) or np.any(array > 255):
        raise ValueError("Expected palette colours in 0..255. Received: values outside that range")
    if num_classes is not None and len(array) < num_classes:
        raise ValueError(f"Expected at least {num_classes} palette colours (one per class). "
                         f"Received: {len(array)} colours")
    return array.astype(np.uint8)


def _labels(labels, arg: str = "labels") -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 3 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"Expected {arg} to be an integer (H, W) label map. Received: {arg} of shape "
                         f"{labels.shape} and dtype {labels.dtype}")
    return labels


def _rgb(image, arg: str = "image") -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"Expected {arg} to be a PIL image or a uint8 array in pixel units (use `denormalize` for "
                         f"normalised float images). Received: dtype {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    elif array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"Expected {arg} of shape (H, W, 3) (or (H, W), (H, W, 4)). Received: {arg} of shape "
                         f"{array.shape}")
    return array


def colorize(labels, palette=None, *, ignore_label: int | None = 255, ignore_color=(0, 0, 0)) -> np.ndarray:
    """Colours an integer ``(H, W)`` label map.

    Args:
        labels: integer label map.
        palette: one ``[r, g, b]`` per class; the default palette (`default_palette`) when ``None``.
        ignore_label: label drawn in ``ignore_color`` whatever the palette.
        ignore_color: colour of the ignore label and of labels outside the palette (e.g. negative values).

    Returns:
        ``(H, W, 3)`` uint8 RGB image.
    """
    labels = _labels(labels)
    if palette is None:
        palette = default_palette(max(int(labels.max(initial=0)) + 1, 1))
    palette = resolve_palette(palette)
    out = np.empty(labels.shape + (3,), np.uint8)
    out[:] = np.asarray(ignore_color, np.uint8)
    valid = (labels >= 0) & (labels < len(palette))
    if ignore_label is not None:
        valid &= labels != ignore_label
    out[valid] = palette[labels[valid]]
    return out


def overlay(image, labels, palette=None, alpha: float = 0.5, ignore_label: int | None = 255) -> np.ndarray:
    """Blends the colours of ``labels`` onto ``image``.

    Args:
        image: uint8 ``(H, W, 3)`` array or PIL image.
        labels: integer ``(H, W)`` label map of the image's size.
        palette: one ``[r, g, b]`` per class (default palette when ``None``).
        alpha: weight of the label colour, in [0, 1].
        ignore_label: label left unblended (as are labels outside the palette).

    Returns:
        ``(H, W, 3)`` uint8 RGB image.
    """
    image = _rgb(image)
    labels = _labels(labels)
    if labels.shape != image.shape[:2]:
        raise ValueError(f"Expected labels of the image's size {image.shape[:2]}. Received: labels of shape "
                         f"{labels.shape}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"Expected alpha in [0, 1]. Received: alpha={alpha!r}")
    if palette is None:
        palette = default_palette(max(int(labels.max(initial=0)) + 1, 1))
    palette = resolve_palette(palette)
    valid = (labels >= 0) & (labels < len(palette))
    if ignore_label is not None:
        valid &= labels != ignore_label
    out = image.copy()
    blended = (1.0 - alpha) * image[valid].astype(np.float32) + alpha * palette[labels[valid]].astype(np.float32)
    out[valid] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


def denormalize(image, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Inverts ``(pixel - mean) / std``: a normalised float ``(H, W, 3)`` image back to uint8 pixels."""
    pixels = np.asarray(image, np.float32) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def label_image(labels, palette=None) -> Image.Image:
    """An index PNG-ready image whose pixel values are the labels.

    Label maps with values in 0..255 become a palette (``"P"``) image, so viewers show colours while the stored
    values stay the class indices; larger values need a 16-bit greyscale image (``"I;16"``).
    """
    labels = _labels(labels)
    if labels.size and (labels.min() < 0 or labels.max() > 65535):
        raise ValueError(f"Expected labels in 0..65535 for a PNG. Received: values in {labels.min()}.."
                         f"{labels.max()}")
    if labels.size and labels.max() > 255:
        return Image.fromarray(labels.astype(np.uint16))
    image = Image.frombytes("P", (labels.shape[1], labels.shape[0]), np.ascontiguousarray(labels, np.uint8).tobytes())
    colours = np.zeros((256, 3), np.uint8)
    if palette is not None:
        palette = resolve_palette(palette)[:256]
        colours[:len(palette)] = palette
    else:
        colours[:] = default_palette(256)
    image.putpalette(colours.ravel().tolist())
    return image


def save_image(image, path) -> str:
    """Writes a PIL image or a uint8 array to ``path`` atomically (format from the extension)."""
    from kerasseg.saving import atomic_path

    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image))
    path = os.fspath(path)
    fmt = Image.registered_extensions().get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise ValueError(f"Expected an image file extension such as .png. Received: path={path!r}")
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt)
    return path


# --------------------------------------------------------------------------------------------------------------
# Confusion-matrix heat map
# --------------------------------------------------------------------------------------------------------------

# The "Blues" ramp: light for small fractions, dark blue for large ones (readable in print and greyscale).
_RAMP = np.array([[247, 251, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]], np.float64)


def _ramp(value: float) -> tuple[int, int, int]:
    x = min(max(float(value), 0.0), 1.0) * (len(_RAMP) - 1)
    i = min(int(x), len(_RAMP) - 2)
    c = _RAMP[i] + (x - i) * (_RAMP[i + 1] - _RAMP[i])
    return int(round(c[0])), int(round(c[1])), int(round(c[2]))


def _text_size(font, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text)
    return right - left, bottom - top


def confusion_matrix_image(cm, class_names: Sequence[str] | None = None, *, normalize: bool = True,
                           title: str | None = None) -> Image.Image:
    """Draws a confusion matrix (rows: ground truth, columns: prediction) as a heat map.

    Args:
        cm: ``(C, C)`` matrix of pixel counts.
        class_names: one name per class (class indices when ``None``).
        normalize: colour and label each row by its fraction of that class's ground-truth pixels (percent);
            otherwise by the fraction of the largest cell. Rows of classes without ground truth are grey.
        title: text above the matrix (a default describing the normalisation when ``None``).

    Returns:
        An RGB PIL image; labels use PIL's default font.
    """
    cm = np.asarray(cm, np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise ValueError(f"Expected a square (C, C) confusion matrix. Received: cm of shape {cm.shape}")
    n = cm.shape[0]
    names = [str(i) for i in range(n)] if class_names is None else [str(c) for c in class_names]
    if len(names) != n:
        raise ValueError(f"Expected {n} class names (one per row of the matrix). Received: {len(names)} names")
    rows = cm.sum(axis=1, keepdims=True)
    if normalize:
        with np.errstate(divide="ignore", invalid="ignore"):
            fractions = np.where(rows > 0, cm / rows, np.nan)
    else:
        fractions = cm / cm.max() if cm.max() > 0 else np.zeros_like(cm)
    if title is None:
        title = "confusion matrix, % of each ground-truth row" if normalize else "confusion matrix, pixel counts"

    font = ImageFont.load_default()
    pad = 6
    text_h = max(_text_size(font, "Hg")[1], _text_size(font, "100")[1])
    cell = max(28, _text_size(font, "100")[0] + 10, text_h + 10)
    name_w = max(_text_size(font, s)[0] for s in names)
    axis_gap = text_h + 2 * pad  # room for the rotated "ground truth" caption
    left = axis_gap + name_w + pad
    top = text_h + pad + text_h + 2 * pad + name_w + pad  # title, "prediction" caption, rotated column names
    width = left + n * cell + pad
    width = max(width, _text_size(font, title)[0] + 2 * pad)
    height = top + n * cell + pad
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)

    draw.text((pad, pad // 2), title, fill="black", font=font)
    caption = "prediction"
    draw.text((left + (n * cell - _text_size(font, caption)[0]) // 2, pad + text_h + pad // 2), caption,
              fill="black", font=font)
    # Column names, written vertically: drawn on a strip and rotated, since PIL text has no direction option.
    for j, name in enumerate(names):
        w, h = _text_size(font, name)
        strip = Image.new("RGB", (w + 2, text_h + 4), "white")
        ImageDraw.Draw(strip).text((1 - font.getbbox(name)[0], 1 - font.getbbox(name)[1]), name, fill="black",
                                   font=font)
        strip = strip.rotate(90, expand=True)
        image.paste(strip, (left + j * cell + (cell - strip.width) // 2, top - pad - strip.height))
    caption = "ground truth"
    w, _ = _text_size(font, caption)
    strip = Image.new("RGB", (w + 2, text_h + 4), "white")
    ImageDraw.Draw(strip).text((1, 1 - font.getbbox(caption)[1]), caption, fill="black", font=font)
    strip = strip.rotate(90, expand=True)
    image.paste(strip, (pad, top + max(0, (n * cell - strip.height) // 2)))

    for i, name in enumerate(names):
        w, h = _text_size(font, name)
        y = top + i * cell + (cell - h) // 2 - font.getbbox(name)[1]
        draw.text((left - pad - w, y), name, fill="black", font=font)
        for j in range(n):
            x0, y0 = left + j * cell, top + i * cell
            value = fractions[i, j]
            if np.isnan(value):
                draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=(225, 225, 225))
                continue
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=_ramp(value))
            if cm[i, j] == 0:
                continue
            label = (f"{100 * value:.0f}" if 100 * value >= 0.5 else "<1") if normalize else f"{cm[i, j]:.0f}"
            tw, th = _text_size(font, label)
            if tw > cell - 2:
                continue
            colour = "white" if value > 0.5 else "black"
            draw.text((x0 + (cell - tw) // 2 - font.getbbox(label)[0], y0 + (cell - th) // 2 - font.getbbox(label)[1]),
                      label, fill=colour, font=font)
    draw.rectangle([left - 1, top - 1, left + n * cell, top + n * cell], outline=(80, 80, 80))
    return image


def save_confusion_png(cm, class_names: Sequence[str] | None, path, *, normalize: bool = True) -> str:
    """Writes `confusion_matrix_image` (row-normalised by default) to ``path`` atomically; returns the path."""
    return save_image(confusion_matrix_image(cm, class_names, normalize=normalize), path)


# --------------------------------------------------------------------------------------------------------------
# Dataset grid
# --------------------------------------------------------------------------------------------------------------


def dataset_grid(images, labels, class_names: Sequence[str], palette=None, *, ignore_label: int | None = 255,
                 alpha: float = 0.5, columns: int = 2, title: str | None = None) -> Image.Image:
    """Draws examples as ``image | image with label overlay`` tiles in a grid, with a legend of class names.

    The legend lists the classes present in the shown labels (and the ignore label, drawn unblended), so a person
    can check that every label sits on its object after loading and augmentation.

    Args:
        images: uint8 ``(H, W, 3)`` arrays (sizes may differ).
        labels: integer ``(H, W)`` label maps of the images' sizes.
        class_names: one name per class.
        palette: one ``[r, g, b]`` per class (default palette when ``None``).
        ignore_label: label left unblended and listed as "ignore".
        alpha: weight of the label colour in the overlay.
        columns: tiles per row.
        title: text above the grid.

    Returns:
        An RGB PIL image.
    """
    images, labels = list(images), list(labels)
    if not images or len(images) != len(labels):
        raise ValueError(f"Expected the same non-zero number of images and labels. Received: {len(images)} images, "
                         f"{len(labels)} labels")
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"Expected columns to be a positive integer. Received: columns={columns!r}")
    names = [str(n) for n in class_names]
    palette = resolve_palette(palette, len(names))
    tiles = []
    present = set()
    for image, label in zip(images, labels):
        image, label = _rgb(image), _labels(label)
        tiles.append(np.concatenate([image, np.full((image.shape[0], 4, 3), 255, np.uint8),
                                     overlay(image, label, palette, alpha, ignore_label)], axis=1))
        present |= set(np.unique(label).tolist())
    font = ImageFont.load_default()
    pad = 6
    tile_h = max(t.shape[0] for t in tiles)
    tile_w = max(t.shape[1] for t in tiles)
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    text_h = _text_size(font, "Hg")[1]
    top = pad + (text_h + pad if title else 0)

    entries = [(palette[c], names[c]) for c in sorted(present) if 0 <= c < len(names)]
    if ignore_label is not None and ignore_label in present:
        entries.append(((0, 0, 0), f"ignore ({ignore_label})"))
    others = sorted(v for v in present if not 0 <= v < len(names) and v != ignore_label)
    if others:
        entries.append(((0, 0, 0), f"other values {others[:6]}"))
    width = max(pad + columns * (tile_w + pad), 200)
    swatch = text_h + 4
    entry_w = max(_text_size(font, n)[0] for _, n in entries) + swatch + 3 * pad if entries else 0
    per_row = max(1, (width - pad) // entry_w) if entries else 1
    legend_h = (-(-len(entries) // per_row)) * (swatch + pad) + pad if entries else 0
    height = top + rows * (tile_h + pad) + legend_h
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, pad), title, fill="black", font=font)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        canvas.paste(Image.fromarray(tile), (pad + c * (tile_w + pad), top + r * (tile_h + pad)))
    y0 = top + rows * (tile_h + pad)
    for k, (colour, name) in enumerate(entries):
        r, c = divmod(k, per_row)
        x, y = pad + c * entry_w, y0 + r * (swatch + pad)
        draw.rectangle([x, y, x + swatch, y + swatch], fill=tuple(int(v) for v in colour), outline=(80, 80, 80))
        draw.text((x + swatch + pad, y + 2 - font.getbbox(name)[1]), name, fill="black", font=font)
    return canvas
