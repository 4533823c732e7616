#!/usr/bin/env python
"""Train a kerasseg model with ``model.fit``.

Example::

    python tools/train.py --model erfnet --dataset synthetic --data-dir runs/synthetic \
        --input-size 128x256 --epochs 30 --batch-size 8 --lr 5e-4 --output-dir runs/erfnet

Writes ``OUT/best.keras`` (best validation mIoU), ``OUT/final.keras``, ``OUT/history.csv`` and ``OUT/config.json``.
"""

from __future__ import annotations

import argparse
import json
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="erfnet", help="registry name (see kerasseg.list_models())")
    p.add_argument("--dataset", default="synthetic", choices=["synthetic", "folder"])
    p.add_argument("--data-dir", default="runs/synthetic", help="dataset root (generated there for 'synthetic')")
    p.add_argument("--input-size", default="128x256", help="HEIGHTxWIDTH of the model input and training crops")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (poly decay, power 0.9)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-epochs", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-train", type=int, default=300, help="synthetic training scenes")
    p.add_argument("--num-val", type=int, default=60, help="synthetic validation scenes")
    p.add_argument("--model-kwargs", default="{}", help="JSON dict of extra builder arguments")
    p.add_argument("--output-dir", default="runs/train")
    p.add_argument("--verbose", type=int, default=2, choices=[0, 1, 2])
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        model_kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as e:
        raise SystemExit(f"--model-kwargs: expected a JSON object. Received: {args.model_kwargs!r} ({e})")
    from kerasseg.training import TrainConfig, train

    cfg = TrainConfig(model=args.model, dataset=args.dataset, data_dir=args.data_dir, output_dir=args.output_dir,
                      input_size=args.input_size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs, seed=args.seed,
                      num_train=args.num_train, num_val=args.num_val, model_kwargs=model_kwargs,
                      verbose=args.verbose)
    result = train(cfg)
    print(f"best val mIoU {result['best_val_miou']:.4f} at epoch {result['best_epoch']} "
          f"({result['seconds']:.0f} s); wrote {result['best_path']} and {result['final_path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
