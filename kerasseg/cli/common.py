"""What the command-line tools share: the one image-size parser, the argument groups several tools take (model file,
dataset, calibration, export head, threads, JSON report) with their choices read from the package, and the way a
tool's ``main`` reports bad input.

Every tool is a module ``kerasseg.cli.<name>`` with ``build_parser()`` and ``main(argv=None) -> int`` (the exit
status); ``tools/<name>.py`` and the ``kerasseg-<name>`` console script both run that ``main``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from kerasseg.data import DATASET_FORMATS
from kerasseg.export import LABEL_DTYPES, OUTPUT_HEADS
from kerasseg.saving import atomic_path
from kerasseg.training import parse_size

__all__ = ["tool_parser", "parse_image_size", "image_size", "size_option", "at_least", "add_model_file",
           "add_dataset", "add_data_dir", "add_num_calibration", "add_output_head", "add_host_upsample",
           "add_threads", "add_json", "write_json", "write_text", "report_errors", "model_metadata",
           "checkout_root", "import_device_runtime"]


def tool_parser(doc: str, **kwargs) -> argparse.ArgumentParser:
    """The parser of a tool whose help is ``doc`` (its module docstring), printed with its own line breaks."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)


# ------------------------------------------------------------------------------------------------------------ sizes

def parse_image_size(text, *, square: bool = False, name: str = "") -> tuple[int, int]:
    """``(height, width)`` of ``"HEIGHTxWIDTH"``, or with ``square`` also of a single ``"N"`` (``NxN``).

    The HEIGHTxWIDTH form is read by `kerasseg.training.parse_size`, as the sizes of a training config are.

    Args:
        text: the size as given.
        square: also accept a single positive integer.
        name: the option the size was given to (e.g. ``"--stride"``), named in the error.

    Raises:
        ValueError: any other text, or a size below 1.
    """
    text = str(text).strip()
    try:
        if not (square and text.isdigit()):
            return parse_size(text)
        if int(text) >= 1:
            return int(text), int(text)
    except ValueError:
        pass  # one message for every way a size can be wrong, naming the option parse_size does not know
    form = "N or HEIGHTxWIDTH" if square else "HEIGHTxWIDTH"
    received = f"{name} {text!r}" if name else repr(text)
    raise ValueError(f"Expected a positive size as {form}, e.g. 128x256. Received: {received}")


def image_size(flag: str):
    """argparse ``type`` of the HEIGHTxWIDTH option ``flag``: `parse_image_size`, a bad value a usage error."""
    def parse(text: str) -> tuple[int, int]:
        try:
            return parse_image_size(text, name=flag)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


def size_option(value, flag: str, *, square: bool = False):
    """`parse_image_size` of an option read after argparse (``None`` stays ``None``).

    For tools that report a bad size like their other bad input (exit status 2 from ``main``, not a usage error).
    """
    return None if value is None else parse_image_size(value, square=square, name=flag)


def at_least(low: int, kind=int):
    """argparse ``type`` of a number that must be ``>= low`` (a count, a number of threads)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"Expected a number >= {low}. Received: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"Expected a number >= {low}. Received: {text!r}")
        return value

    return parse


# ------------------------------------------------------------------------------------------------ argument groups

def add_model_file(p: argparse.ArgumentParser, help: str = "the trained .keras model") -> None:
    """The positional ``model``: a ``.keras`` file saved by kerasseg."""
    p.add_argument("model", help=help)


def add_dataset(p: argparse.ArgumentParser, default: str | None = "synthetic", *, required: bool = False,
                formats=DATASET_FORMATS, help: str | None = None) -> None:
    """``--dataset``, one of `kerasseg.data.DATASET_FORMATS` (or the subset ``formats``)."""
    if help is None:
        help = "dataset format" + (f" (default {default})" if default and not required else "")
    kwargs = {"required": True} if required else {"default": default}
    p.add_argument("--dataset", choices=list(formats), help=help, **kwargs)


def add_data_dir(p: argparse.ArgumentParser, default: str | None = None, *, help: str = "dataset root") -> None:
    """``--data-dir``, required unless given a default."""
    kwargs = {"default": default} if default else {"required": True}
    p.add_argument("--data-dir", help=help, **kwargs)


def add_num_calibration(p: argparse.ArgumentParser, default: int = 100,
                        help: str = "int8 calibration images (default 100)") -> None:
    """``--num-calibration``, a count of calibration images (at least 1)."""
    p.add_argument("--num-calibration", type=at_least(1), default=default, help=help)


def add_output_head(p: argparse.ArgumentParser) -> None:
    """``--output-head`` (`kerasseg.export.OUTPUT_HEADS`) and ``--label-dtype`` (`kerasseg.export.LABEL_DTYPES`)."""
    p.add_argument("--output-head", default="logits", choices=OUTPUT_HEADS,
                   help="what the exported model outputs (labels = in-graph argmax; default logits)")
    p.add_argument("--label-dtype", default="int32", choices=LABEL_DTYPES, help="labels head: map type")


def add_host_upsample(p: argparse.ArgumentParser,
                      help: str = "export logits without the model's final bilinear resize; the host up-samples "
                                  "them") -> None:
    """``--host-upsample``: logits without the model's final resize."""
    p.add_argument("--host-upsample", action="store_true", help=help)


def add_threads(p: argparse.ArgumentParser, default: int | None, help: str) -> None:
    """``--threads`` of the runtimes (at least 1)."""
    p.add_argument("--threads", type=at_least(1), default=default, help=help)


def add_json(p: argparse.ArgumentParser, help: str = "also write the reports to this JSON file") -> None:
    """``--json``: a machine-readable copy of what the tool prints."""
    p.add_argument("--json", help=help)


# ---------------------------------------------------------------------------------------------------------- output

def write_text(path: str, text: str) -> str:
    """Writes ``text`` to ``path`` atomically (its folder created); returns ``path``."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def write_json(path: str, data) -> str:
    """Writes ``data`` as indented JSON to ``path`` atomically; returns ``path``."""
    return write_text(path, json.dumps(data, indent=2))


def report_errors(run, args, errors: tuple) -> int:
    """``run(args)``; on one of ``errors`` (bad input: a missing file, a wrong value) ``error: MESSAGE`` on stderr
    and exit status 2 instead of a traceback."""
    try:
        return run(args)
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


# ----------------------------------------------------------------------------------------------------------- models

def model_metadata(model, path: str):
    """The `kerasseg.preprocessing.ModelMetadata` a saved model carries, or, for a ``.keras`` file saved without
    kerasseg, the defaults (ImageNet normalisation) with a warning on stderr naming ``path``."""
    from kerasseg.preprocessing import ModelMetadata

    metadata = getattr(model, "kerasseg_metadata", None)
    if metadata is None:
        print(f"warning: {path} carries no kerasseg metadata; assuming ImageNet normalisation", file=sys.stderr)
        metadata = ModelMetadata.for_model(model, "unknown")
    return metadata


# ------------------------------------------------------------------------------------------------- device runtime

def checkout_root() -> str:
    """The folder holding the ``kerasseg`` package: in a checkout, the repository with ``tflite/`` beside it."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def import_device_runtime():
    """``tflite/runtime.py``, the device runtime: a folder of scripts in a checkout, not part of the package.

    Raises:
        ModuleNotFoundError: kerasseg is installed without its checkout.
    """
    root = checkout_root()
    if not os.path.isfile(os.path.join(root, "tflite", "runtime.py")):
        raise ModuleNotFoundError(f"Expected the device runtime tflite/runtime.py of a kerasseg checkout beside the "
                                  f"package. Received: none in {root!r}")
    # First on the path, so that the checkout's runtime wins over an installed distribution named "tflite".
    if root not in sys.path:
        sys.path.insert(0, root)
    from tflite import runtime

    return runtime
