"""kerasseg.cli: every tool builds its parser and prints its help in-process, the one size parser, choices read
from the package, and the thin scripts in tools/ and the console scripts that run the tools."""

import argparse
import configparser
import contextlib
import importlib
import io
import os

import pytest

from kerasseg import cli
from kerasseg.cli import common

from tests.paths import ROOT  # noqa: E402
TOOLS = cli.tools()


def _choices(parser, flag):
    return next(a for a in parser._actions if flag in a.option_strings).choices


def test_the_tools_are_found():
    assert {"train", "evaluate", "predict", "export_tflite", "export_onnx", "parity", "check_tflite"} <= set(TOOLS)
    assert "common" not in TOOLS


@pytest.mark.parametrize("name", TOOLS)
def test_every_tool_builds_its_parser_and_prints_its_help(name):
    module = importlib.import_module(f"kerasseg.cli.{name}")
    assert isinstance(module.build_parser(), argparse.ArgumentParser)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    # The help is the module's docstring, the tool's documentation.
    assert out.getvalue().startswith("usage:") and module.__doc__.splitlines()[0] in out.getvalue()


@pytest.mark.parametrize("name", TOOLS)
def test_every_tool_has_a_thin_script_and_a_console_script(name):
    with open(os.path.join(ROOT, "tools", f"{name}.py"), encoding="utf-8") as f:
        script = f.read()
    assert f"from kerasseg.cli.{name} import main" in script and "raise SystemExit(main())" in script
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    entry_points = dict(line.split(" = ") for line in config["options.entry_points"]["console_scripts"].split("\n")
                        if line.strip())
    assert entry_points[f"kerasseg-{name.replace('_', '-')}"] == f"kerasseg.cli.{name}:main"


@pytest.mark.parametrize("text, expected", [("128x256", (128, 256)), ("512X1024", (512, 1024)), (" 8x12 ", (8, 12))])
def test_size_parser_reads_height_by_width(text, expected):
    assert common.image_size("--size")(text) == expected
    assert common.parse_image_size(text) == expected


@pytest.mark.parametrize("text", ["128", "128x", "x256", "axb", "128x256x3", "0x256", "128x-1", ""])
def test_size_parser_rejects_bad_values_with_a_typed_message(text):
    with pytest.raises(argparse.ArgumentTypeError, match=r"^Expected a positive size as HEIGHTxWIDTH, e\.g\. "
                                                         r"128x256\. Received: --size ") as error:
        common.image_size("--size")(text)
    assert str(error.value).endswith(f"Received: --size {text.strip()!r}")
    with pytest.raises(ValueError, match=r"Received: '"):
        common.parse_image_size(text)


def test_size_parser_errors_are_usage_errors_naming_the_flag(capsys):
    parser = importlib.import_module("kerasseg.cli.make_synthetic").build_parser()
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--output", "x", "--size", "12x"])
    assert exit_info.value.code == 2
    assert "argument --size: Expected a positive size as HEIGHTxWIDTH" in capsys.readouterr().err


def test_size_option_takes_a_single_side_and_names_the_flag():
    assert common.size_option(None, "--stride") is None
    assert common.size_option("16", "--stride", square=True) == (16, 16)
    assert common.size_option("8x12", "--stride", square=True) == (8, 12)
    with pytest.raises(ValueError, match=r"^Expected a positive size as N or HEIGHTxWIDTH.*Received: --stride '3x'$"):
        common.size_option("3x", "--stride", square=True)
    with pytest.raises(ValueError, match=r"Received: --stride '0'$"):
        common.size_option("0", "--stride", square=True)
    with pytest.raises(ValueError, match=r"as HEIGHTxWIDTH.*Received: --input-size '16'$"):
        common.size_option("16", "--input-size")


def test_at_least_rejects_small_values():
    assert common.at_least(1)("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match=r"Expected a number >= 1. Received: '0'"):
        common.at_least(1)("0")
    with pytest.raises(argparse.ArgumentTypeError, match=r"Received: 'two'"):
        common.at_least(0)("two")


def test_choices_come_from_the_package():
    from kerasseg import evaluation, export
    from kerasseg.data import DATASET_FORMATS
    from kerasseg.export import onnx
    from kerasseg.training import config

    def parser(name):
        return importlib.import_module(f"kerasseg.cli.{name}").build_parser()

    assert tuple(_choices(parser("export_tflite"), "--mode")) == export.MODES
    assert tuple(_choices(parser("export_tflite"), "--output-head")) == export.OUTPUT_HEADS
    assert tuple(_choices(parser("export_tflite"), "--label-dtype")) == export.LABEL_DTYPES
    assert tuple(_choices(parser("export_tflite"), "--target")) == export.TARGETS
    assert tuple(_choices(parser("check_tflite"), "--target")) == export.TARGETS
    assert tuple(_choices(parser("export_onnx"), "--mode")) == onnx.MODES
    assert tuple(_choices(parser("export_onnx"), "--output-head")) == export.OUTPUT_HEADS
    assert tuple(_choices(parser("evaluate"), "--mode")) == evaluation.MODES
    assert set(_choices(parser("predict"), "--mode")) < set(evaluation.MODES)
    assert tuple(_choices(parser("train"), "--optimizer")) == config.OPTIMIZERS
    assert tuple(_choices(parser("train"), "--strategy")) == config.STRATEGIES
    for name, flag in [("train", "--dataset"), ("evaluate", "--dataset"), ("export_tflite", "--dataset"),
                       ("export_onnx", "--dataset"), ("parity", "--dataset"), ("quant_report", "--dataset"),
                       ("package_pretrained", "--dataset"), ("recalibrate_bn", "--dataset"),
                       ("verify_dataset", "--format"), ("visualize_dataset", "--format")]:
        assert tuple(_choices(parser(name), flag)) == DATASET_FORMATS, name
