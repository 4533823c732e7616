"""Dense-CRF refinement (kerasseg.evaluation.crf) and boundary scoring (kerasseg.evaluation.boundary)."""

import sys

import numpy as np
import pytest

from kerasseg.evaluation import (DenseCRF, DenseCRFMissingError, EvaluationResult, band_labels, boundary_band,
                                 evaluate, format_table, predict_logits)

H, W, COLOUR_EDGE, SHIFT = 40, 64, 40, 12
RED, BLUE = (200, 40, 40), (40, 40, 200)
MEAN, STD = (120.0, 110.0, 100.0), (60.0, 55.0, 50.0)


def _frame(edge=COLOUR_EDGE, noise_seed=None):
    """Red left of column ``edge``, blue from it on (optionally with a little sensor noise)."""
    frame = np.empty((H, W, 3), np.uint8)
    frame[:, :edge], frame[:, edge:] = RED, BLUE
    if noise_seed is not None:
        noise = np.random.default_rng(noise_seed).integers(-6, 7, frame.shape)
        frame = np.clip(frame.astype(np.int64) + noise, 0, 255).astype(np.uint8)
    return frame


def _blurred_probabilities(edge):
    """Two-class scores whose 0.5 crossing is at column ``edge`` and that stay unsure over ~20 columns, like a
    coarse network's upsampled output."""
    x = np.arange(W, dtype=np.float64)
    p_left = 0.2 + 0.6 / (1.0 + np.exp((x - edge + 0.5) / 5.0))
    probs = np.stack([p_left, 1.0 - p_left], axis=-1)[None]
    return np.ascontiguousarray(np.broadcast_to(probs, (H, W, 2)), np.float32)


def _first_right_column(labels):
    """Column where each row's label switches from 0 to 1 (one value when the edge is straight)."""
    columns = {int(np.argmax(row != 0)) for row in labels}
    assert len(columns) == 1, columns
    return columns.pop()


def test_crf_moves_a_blurred_label_edge_onto_the_colour_edge():
    probs = _blurred_probabilities(COLOUR_EDGE - SHIFT)
    assert _first_right_column(probs.argmax(-1)) == COLOUR_EDGE - SHIFT
    refined = DenseCRF()(probs, _frame(noise_seed=0))
    assert refined.shape == probs.shape and refined.dtype == np.float32
    np.testing.assert_allclose(refined.sum(-1), 1.0, atol=1e-4)
    assert _first_right_column(refined.argmax(-1)) == COLOUR_EDGE
    # Without the appearance kernel only smoothing is left: no colour information, the edge stays where it was.
    smooth_only = DenseCRF(appearance_weight=0.0)(probs, _frame(noise_seed=0))
    assert abs(_first_right_column(smooth_only.argmax(-1)) - (COLOUR_EDGE - SHIFT)) <= 2


def test_crf_parameters_are_validated_and_recorded():
    crf = DenseCRF(appearance_weight=5, iterations=3)
    assert crf.settings() == {"appearance_weight": 5.0, "appearance_xy_std": 121.0, "appearance_rgb_std": 5.0,
                              "smoothness_weight": 3.0, "smoothness_xy_std": 3.0, "iterations": 3}
    with pytest.raises(ValueError, match=r"appearance_xy_std.*Received: appearance_xy_std=0"):
        DenseCRF(appearance_xy_std=0)
    with pytest.raises(ValueError, match="iterations=2.5"):
        DenseCRF(iterations=2.5)
    with pytest.raises(ValueError, match="smoothness_weight=-1"):
        DenseCRF(smoothness_weight=-1)


def test_crf_bad_input_gets_clear_typed_errors(monkeypatch):
    crf = DenseCRF(iterations=1)
    probs, frame = _blurred_probabilities(20), _frame()
    with pytest.raises(ValueError, match=r"same height and width as the probabilities \(40, 64\).*\(40, 63, 3\)"):
        crf(probs, frame[:, :-1])
    with pytest.raises(ValueError, match="not logits"):
        crf(np.log(probs), frame)
    with pytest.raises(ValueError, match="sum to 1"):
        crf(probs * 0.5, frame)
    with pytest.raises(TypeError, match="frame of dtype float32"):
        crf(probs, frame.astype(np.float32))
    with pytest.raises(TypeError, match="probabilities of dtype int64"):
        crf(probs.argmax(-1)[..., None].astype(np.int64), frame)
    with pytest.raises(ValueError, match=r"shape \(H, W, num_classes\)"):
        crf(probs[0], frame)
    with pytest.raises(ValueError, match=r"RGB frame of shape \(H, W, 3\)"):
        crf(probs, frame[..., :2])
    # A missing extra says what to install (sys.modules entries of None make the import fail).
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(DenseCRFMissingError, match=r"pip install 'kerasseg\[crf\]'"):
        crf(probs, frame)
    assert issubclass(DenseCRFMissingError, ImportError)


def test_kerasseg_and_the_crf_flags_work_without_the_extra():
    import subprocess

    code = ("import argparse, sys; sys.modules['pydensecrf'] = None; import kerasseg, kerasseg.evaluation as ev; "
            "p = argparse.ArgumentParser(); ev.add_crf_arguments(p); "
            "assert ev.crf_from_arguments(p.parse_args([])) is None; "
            "print('ok', 'pydensecrf' in sys.modules and sys.modules['pydensecrf'] is not None)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.split() == ["ok", "False"], proc.stderr[-2000:]


def test_boundary_band_marks_pixels_near_label_edges_only():
    labels = np.zeros((8, 10), np.int32)
    labels[:, 5:] = 1
    labels[0, :] = 255  # borders with unlabelled pixels are no edges
    band = boundary_band(labels, 1, num_classes=2)
    expected = np.zeros((8, 10), bool)
    expected[:, 3:7] = True  # columns 4 | 5 form the edge, one more pixel on either side
    np.testing.assert_array_equal(band, expected)
    np.testing.assert_array_equal(boundary_band(labels, 0, num_classes=2)[:, 3:7].any(0), [False, True, True, False])
    banded = band_labels(labels, 1, num_classes=2)
    assert banded.dtype == np.int64
    np.testing.assert_array_equal(banded, np.where(expected, labels, 255))
    assert set(np.unique(band_labels(labels, 1, 2, ignore_label=None))) == {-1, 0, 1, 255}
    with pytest.raises(ValueError, match="width=-1"):
        boundary_band(labels, -1, 2)
    with pytest.raises(ValueError, match="integer"):
        boundary_band(labels.astype(np.float32), 1, 2)


class ShiftedEdgeNet:
    """A stand-in coarse network: finds the red/blue edge of the normalised image but reports it ``SHIFT`` columns
    too far left and blurred, as logits, probabilities or integer labels (the output heads of Keras, TFLite and
    ONNX files)."""

    input_shape = (H, W, 3)

    def __init__(self, output):
        self.output = output

    def __call__(self, batch):
        out = []
        for image in batch:
            redness = image[..., 0] * STD[0] - image[..., 2] * STD[2]  # > 0 left of the edge
            edge = int(np.argmax(redness.mean(0) < 0))
            out.append(_blurred_probabilities(edge - SHIFT))
        probs = np.stack(out)
        if self.output == "labels":
            return probs.argmax(-1).astype(np.int32)
        return probs if self.output == "probabilities" else np.log(probs)


def _frames_dataset():
    out = []
    for i, edge in enumerate((30, 40, 48)):
        frame = _frame(edge, noise_seed=i)
        labels = (np.arange(W) >= edge).astype(np.int32)[None].repeat(H, 0)
        labels[:2] = 255
        out.append(((frame.astype(np.float32) - MEAN) / STD, labels))
    return out


@pytest.mark.parametrize("output", ["logits", "probabilities", "labels"])
def test_evaluate_refines_every_output_head_through_the_one_scoring_loop(output):
    data = _frames_dataset()
    net = ShiftedEdgeNet(output)
    crf = DenseCRF(iterations=5)
    plain = evaluate(net, data, num_classes=2, output=output, boundary_width=3)
    refined = evaluate(net, data, num_classes=2, output=output, boundary_width=3,
                       refine=crf.for_normalized_images(MEAN, STD), per_image=True)
    assert plain.image_confusion is None and refined.image_confusion.shape == (3, 2, 2)
    np.testing.assert_array_equal(refined.image_confusion.sum(0), refined.confusion)
    np.testing.assert_array_equal(refined.image_boundary_confusion.sum(0), refined.boundary_confusion)
    assert refined.settings["refine"] == crf.settings() and refined.settings["boundary_width"] == 3
    assert "refine" not in plain.settings
    band_pixels = sum(int(((band_labels(l, 3, 2) != 255)).sum()) for _, l in data)
    assert plain.boundary_confusion.sum() == refined.boundary_confusion.sum() == band_pixels
    # The edge is 12 columns off, more than the band is wide: the boundary score is poor, and the CRF fixes it for
    # soft scores; label heads give one-hot votes without uncertainty to refine, which the CRF must not break.
    assert plain.boundary_miou < 0.5
    if output == "labels":
        assert refined.miou >= plain.miou - 1e-9
    else:
        assert refined.boundary_miou > 0.95 and refined.miou > 0.99 > plain.miou
    again = EvaluationResult.from_dict(refined.to_dict())
    np.testing.assert_array_equal(again.boundary_confusion, refined.boundary_confusion)
    assert again.boundary_miou == pytest.approx(refined.boundary_miou)
    assert "boundary (within 3 px" in format_table(refined) and "dense CRF" in format_table(refined)


def test_evaluate_rejects_bad_refine_and_boundary_arguments():
    data = _frames_dataset()
    with pytest.raises(ValueError, match="refine=3"):
        evaluate(ShiftedEdgeNet("logits"), data, num_classes=2, refine=3)
    with pytest.raises(ValueError, match="boundary_width=-2"):
        evaluate(ShiftedEdgeNet("logits"), data, num_classes=2, boundary_width=-2)
    with pytest.raises(ValueError, match="per_image='yes'"):
        evaluate(ShiftedEdgeNet("logits"), data, num_classes=2, per_image="yes")
    with pytest.raises(TypeError, match="Expected a DenseCRF"):
        from kerasseg.evaluation import NormalizedImageCRF

        NormalizedImageCRF(object(), MEAN, STD)


def test_predict_logits_can_return_probabilities():
    image, _ = _frames_dataset()[0]
    net = ShiftedEdgeNet("logits")
    logits = predict_logits(net, image)
    probs = predict_logits(net, image, probabilities=True)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(-1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(predict_logits(ShiftedEdgeNet("probabilities"), image, output="probabilities",
                                              probabilities=True).sum(-1), 1.0, atol=1e-5)
