"""What every backbone shares: endpoint names and the stride-to-dilation schedule.

A backbone is a function ``backbone(inputs, ...) -> dict`` mapping endpoint names to tensors. The names are the
*nominal* strides of the classification network: ``"stride4"`` is always the output of the last stage whose
nominal stride is 4, whatever the output stride. When the last stages trade their stride for dilation (atrous
convolution, Chen et al.), ``"stride16"`` and ``"stride32"`` keep their names although their feature maps are then
only 8 or 16 times smaller than the input; heads pick skips by name, never by layer index, so a decoder written for
one output stride works for all of them.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["ENDPOINTS", "OUTPUT_STRIDES", "stride_schedule", "check_output_stride"]

# Endpoint names, shallow to deep; the number is the nominal stride of the stage that produces the feature.
ENDPOINTS = ("stride2", "stride4", "stride8", "stride16", "stride32")

OUTPUT_STRIDES = (8, 16, 32)


def check_output_stride(output_stride, allowed: Sequence[int] = OUTPUT_STRIDES) -> int:
    """Validates ``output_stride`` against ``allowed`` and returns it as an int."""
    if isinstance(output_stride, bool) or output_stride not in tuple(allowed):
        raise ValueError(f"Expected output_stride to be one of {tuple(allowed)}. "
                         f"Received: output_stride={output_stride!r}")
    return int(output_stride)


def stride_schedule(stage_strides: Sequence[int], output_stride: int, initial_stride: int):
    """Per-stage ``(stride, dilation)`` that stops down-sampling at ``output_stride``.

    Once the running stride reaches ``output_stride``, each further stride ``s`` is replaced by stride 1 and the
    dilation of that stage and of all later stages is multiplied by ``s``, which keeps every receptive field as in
    the classification network (the "atrous algorithm" of DeepLab and the dilated network of PSPNet).

    Args:
        stage_strides: nominal stride of each stage, e.g. ``(1, 2, 2, 2)`` for ResNet's conv2..conv5.
        output_stride: the stride of the deepest feature map (8, 16 or 32).
        initial_stride: the stride of the stem, before the first stage.

    Returns:
        A list of ``(stride, dilation)`` pairs, one per stage; every block of a stage uses that dilation.
    """
    current, dilation, schedule = initial_stride, 1, []
    for s in stage_strides:
        if current * s > output_stride:
            dilation *= s
            schedule.append((1, dilation))
        else:
            current *= s
            schedule.append((s, dilation))
    return schedule
