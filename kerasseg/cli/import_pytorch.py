"""Import a PyTorch checkpoint of a paper's own code into a kerasseg ``.keras`` model, without torch.

Example (the ERFNet authors' Cityscapes model, ``erfnet_pretrained.pth`` of github.com/Eromera/erfnet_pytorch)::

    python tools/import_pytorch.py erfnet_pretrained.pth --model erfnet --num-classes 20 \\
        --output erfnet_cityscapes.keras

The checkpoint is read by `kerasseg.torch_checkpoint` (a restricted unpickler: nothing in the file is executed) and
copied by `kerasseg.load_pytorch_weights` into an ERFNet built with ``torch_padding=True`` (the authors' padding).
The model's metadata records the authors' preprocessing, RGB scaled to [0, 1] (their ``ToTensor()`` with no mean /
std: normalisation ``"unit"``), and, for 19 or 20 classes, the Cityscapes train-id class names and colours (the
20th class of the authors' model is their "void" class, trained with weight 0). The ``.keras`` file is written
atomically. Exit status: 0 written, 1 the checkpoint does not fit, 2 bad arguments.

Licence: the ERFNet weights are published under CC BY-NC 4.0 (non-commercial). Users bring them; kerasseg does not
ship them, and a model imported from them carries their licence.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys

from kerasseg.cli.common import at_least, image_size, tool_parser

# The architectures whose authors' checkpoint layout `kerasseg.load_pytorch_weights` reads.
MODELS = ("erfnet",)
# The authors' input transform: ToTensor() only.
NORMALIZATION = {"erfnet": "unit"}


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__)
    p.add_argument("checkpoint", help="the .pth file (torch.save zip archive or legacy format)")
    p.add_argument("--model", required=True, choices=MODELS, help="architecture of the checkpoint")
    p.add_argument("--num-classes", type=at_least(1), required=True,
                   help="classes of the model to build (20 for the authors' Cityscapes checkpoint)")
    p.add_argument("--input-size", type=image_size("--input-size"), default="512x1024",
                   help="HEIGHTxWIDTH of the model's input (multiple of 8); default 512x1024, the authors' "
                        "evaluation size")
    p.add_argument("--skip-classifier", action="store_true",
                   help="keep the new model's classifier when the checkpoint has another class count (weights for "
                        "fine-tuning)")
    p.add_argument("--output", required=True, help="the .keras file to write")
    return p


def _metadata(model, name: str, num_classes: int, checkpoint: str, report):
    from kerasseg.data.cityscapes import CLASS_NAMES, PALETTE
    from kerasseg.preprocessing import ModelMetadata

    meta = ModelMetadata.for_model(model, name, normalization=NORMALIZATION[name])
    if num_classes in (len(CLASS_NAMES), len(CLASS_NAMES) + 1) and "logits" not in report.skipped:
        names, colors = list(CLASS_NAMES), [list(c) for c in PALETTE]
        if num_classes > len(CLASS_NAMES):
            names, colors = names + ["void"], colors + [[0, 0, 0]]
        meta = meta.with_dataset(class_names=names, palette=colors)
    with open(checkpoint, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    meta.extra["imported"] = {"checkpoint": os.path.basename(checkpoint), "sha256": digest,
                              "layout": report.architecture, "copied_layers": len(report.copied),
                              "skipped": sorted(report.skipped),
                              "licence": "that of the checkpoint (ERFNet authors' weights: CC BY-NC 4.0)"}
    return meta


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    height, width = args.input_size
    if not os.path.isfile(args.checkpoint):
        parser.error(f"Expected an existing checkpoint file. Received: checkpoint {args.checkpoint!r}")
    if not args.output.endswith(".keras"):
        parser.error(f"Expected --output to end in .keras. Received: --output {args.output!r}")

    import kerasseg
    from kerasseg.torch_checkpoint import CheckpointFormatError

    try:
        model = kerasseg.build_model(args.model, args.num_classes, (height, width, 3), torch_padding=True)
    except ValueError as e:
        parser.error(str(e))
    try:
        report = kerasseg.load_pytorch_weights(model, args.checkpoint, skip_classifier=args.skip_classifier)
    except (CheckpointFormatError, ValueError) as e:
        print(f"import_pytorch.py: {e}", file=sys.stderr)
        return 1
    print(report.summary())
    kerasseg.save_model(model, args.output, metadata=_metadata(model, args.model, args.num_classes,
                                                               args.checkpoint, report))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
