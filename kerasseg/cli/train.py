"""Train a kerasseg model with ``model.fit``.

Example::

    python tools/train.py --model erfnet --dataset synthetic --data-dir runs/synthetic \\
        --input-size 128x256 --epochs 30 --batch-size 8 --lr 5e-4 --output-dir runs/erfnet

Every option can also come from a YAML (or JSON) file, ``--config run.yaml``, whose keys are the option names
(``input_size: 128x256`` or ``input-size: 128x256``); flags given on the command line override the file. The
resolved options are printed and written to ``OUT/config.json``.

Writes ``OUT/best.keras`` (best validation mIoU), ``OUT/final.keras``, ``OUT/history.csv`` and ``OUT/config.json``.
Running the same command again after an interruption resumes from ``OUT/backup``.
"""

from __future__ import annotations

import argparse
import json
import sys

from kerasseg.cli.common import image_size, tool_parser
from kerasseg.data import DATASET_FORMATS
from kerasseg.training.config import OPTIMIZERS, STRATEGIES


def _pair_of_floats(value: str):
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"Expected MIN,MAX such as 0.75,1.5. Received: {value!r}") from None
    return [low, high]


def _optional_int(value: str):
    return None if value.lower() == "none" else int(value)


def build_parser() -> argparse.ArgumentParser:
    # Every default is None so that only the flags actually given override the config file and the defaults of
    # TrainConfig (which the help texts quote).
    p = tool_parser(__doc__, argument_default=None)
    p.add_argument("--config", help="YAML or JSON file of options; command-line flags override it")
    p.add_argument("--model", help="registry name (see kerasseg.list_models()); default erfnet")
    p.add_argument("--dataset", choices=DATASET_FORMATS, help="dataset format; default synthetic")
    p.add_argument("--data-dir", help="dataset root (generated there for 'synthetic'); default runs/synthetic")
    p.add_argument("--input-size", type=image_size("--input-size"),
                   help="HEIGHTxWIDTH of the saved model's input and of the validation images (and of the training "
                        "crops without --crop-size); default 128x256")
    p.add_argument("--crop-size", type=image_size("--crop-size"),
                   help="HEIGHTxWIDTH of the training crops when smaller than --input-size (the model is validated "
                        "and saved at --input-size); default: --input-size")
    p.add_argument("--scale-range", type=_pair_of_floats,
                   help="MIN,MAX random scale before cropping, e.g. 0.75,1.5; default none")
    p.add_argument("--photometric", action="store_const", const=True,
                   help="random brightness / contrast / saturation / hue")
    p.add_argument("--cache", action="store_const", const=True, help="keep decoded images in memory")
    p.add_argument("--train-split", help="default train")
    p.add_argument("--val-split", help="default val")
    p.add_argument("--epochs", type=int, help="default 10")
    p.add_argument("--batch-size", type=int, help="global batch size; default 8")
    p.add_argument("--steps-per-epoch", type=_optional_int, help="default: training images // batch size")
    p.add_argument("--lr", type=float, help="peak learning rate (poly decay, power 0.9); default 5e-4")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="default adamw; sgd uses --momentum")
    p.add_argument("--momentum", type=float, help="SGD momentum; default 0.9")
    p.add_argument("--weight-decay", type=float, help="decoupled weight decay; default 1e-4")
    p.add_argument("--warmup-epochs", type=float, help="linear warm-up in epochs; default 0")
    p.add_argument("--loss", help="loss name or weighted sum: ce, ohem, dice, focal, lovasz, e.g. 'ce+0.5*lovasz'; "
                                  "default ce")
    p.add_argument("--class-weights", help="none | median | enet | path to a JSON list; default none")
    p.add_argument("--aux-weight", type=float, help="loss weight of an auxiliary output (PSPNet aux=true); "
                                                    "default 0.4")
    p.add_argument("--seed", type=int, help="default 0")
    p.add_argument("--deterministic", action="store_const", const=True,
                   help="seeded, op-deterministic training (reproducible weights; slower)")
    p.add_argument("--mixed-precision", action="store_const", const=True,
                   help="mixed_float16 compute with float32 logits (GPU)")
    p.add_argument("--jit", action="store_const", const=True, help="XLA-compile the train step")
    p.add_argument("--strategy", choices=STRATEGIES,
                   help="tf.distribute strategy: mirrored = all local GPUs (or logical CPUs); multiworker = "
                        "MultiWorkerMirroredStrategy over the cluster in TF_CONFIG (run on every worker); "
                        "default none")
    p.add_argument("--sync-bn", action="store_const", const=True, help="batch norm over all replicas")
    p.add_argument("--backup-freq", help="BackupAndRestore frequency: epoch | STEPS | none; default epoch")
    p.add_argument("--tensorboard", action="store_const", const=True,
                   help="log losses, mIoU, per-class IoU, learning rate and overlays to OUT/tensorboard")
    p.add_argument("--tensorboard-images", type=int, help="validation overlays per epoch; default 3")
    p.add_argument("--init-from", help="a .keras checkpoint to copy weights from (by layer name and shape)")
    p.add_argument("--freeze-encoder", action="store_const", const=True, help="train the decoder only")
    p.add_argument("--unfreeze-at-epoch", type=int, help="with --freeze-encoder: train everything from this epoch")
    p.add_argument("--num-train", type=int, help="synthetic training scenes; default 300")
    p.add_argument("--num-val", type=int, help="synthetic validation scenes; default 60")
    p.add_argument("--model-kwargs", help="JSON dict of extra builder arguments, e.g. '{\"aux\": true}'")
    p.add_argument("--output-dir", help="default runs/train")
    p.add_argument("--verbose", type=int, choices=[0, 1, 2], help="default 2")
    return p


def resolve_config(argv=None):
    """The `TrainConfig` of a command line: defaults, then ``--config`` file, then the flags given."""
    from kerasseg.training import config_from_dict, load_config_file

    args = build_parser().parse_args(argv)
    values = load_config_file(args.config) if args.config else {}
    given = {k: v for k, v in vars(args).items() if k != "config" and v is not None}
    if "model_kwargs" in given:
        try:
            given["model_kwargs"] = json.loads(given["model_kwargs"])
        except json.JSONDecodeError as e:
            raise SystemExit(f"--model-kwargs: Expected a JSON object. Received: {given['model_kwargs']!r} ({e})")
    values.update(given)
    try:
        return config_from_dict(values, source=args.config or "the command line").validate()
    except ValueError as e:
        raise SystemExit(f"train.py: {e}")


def main(argv=None) -> int:
    cfg = resolve_config(argv)
    from kerasseg.errors import InvalidFileError
    from kerasseg.training import TrainingDivergedError, train

    try:
        result = train(cfg)
    except TrainingDivergedError as e:
        print(f"train.py: {e}", file=sys.stderr)
        return 3
    except InvalidFileError as e:  # a backup of another run, or a broken one
        print(f"train.py: {e}", file=sys.stderr)
        return 2
    print(f"best val mIoU {result['best_val_miou']:.4f} at epoch {result['best_epoch']} "
          f"({result['seconds']:.0f} s); wrote {result['best_path']} and {result['final_path']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
