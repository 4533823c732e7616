"""tools/deploy_report.py's bookkeeping: the README's deployment matrix is the committed report rendered by the tool,
rows merge by model, size and classes, and bad arguments or files are clear errors. The tool's measurements (Vela,
LiteRT's GPU accelerator) are tested in tests/export/test_edge_toolchains.py."""

import json
import os

import pytest

from kerasseg.cli import deploy_report
from kerasseg.cli.model_table import REFERENCE
from kerasseg.errors import InvalidFileError
from tests.paths import ROOT


def _row(model="erfnet", size="32x64", classes=3, ok=True):
    target = {"ok": ok, "on_accelerator": 5 if ok else 4, "total": 5, "latency_ms": 1.5, "sram_kib": 12.0,
              "reasons": [] if ok else ["RESIZE_BILINEAR: unsupported scale-factor"], "tool": "Vela 5.2.0"}
    gpu = {"ok": True, "on_accelerator": None, "total": None, "reasons": [], "tool": "LiteRT 2.3.0"}
    return {"model": model, "architecture": model.lower(), "options": {}, "classes": classes, "input": size,
            "targets": {"gpu": gpu, **{t: dict(target) for t in deploy_report.NPU_TARGETS}}}


def test_readme_matrix_is_the_committed_report_rendered_by_the_tool():
    rows = deploy_report.read_report(os.path.join(ROOT, "docs", deploy_report.REPORT))
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    start, end = deploy_report.readme_block(readme, "README.md")
    assert readme[start:end].strip() == deploy_report.markdown(rows, reasons=False).strip()
    assert open(os.path.join(ROOT, "docs", "deploy_report.md"), encoding="utf-8").read() == deploy_report.markdown(rows)
    # Every architecture of the registry at the model table's configurations, judged by all four targets.
    assert {(name, classes, f"{shape[0]}x{shape[1]}") for name, classes, shape, _, _ in REFERENCE} <= {
        (r["architecture"], r["classes"], r["input"]) for r in rows}


def test_rows_merge_by_model_size_and_classes():
    rows = [_row(), _row(size="64x64")]
    rows = deploy_report.merge(rows, _row(ok=False))
    assert [r["input"] for r in rows] == ["32x64", "64x64"] and not rows[0]["targets"]["ethos-u85-256"]["ok"]
    merged = deploy_report.merge([_row(model="SegNet"), *rows, _row(model="Mine")], _row(classes=19))
    assert [(r["model"], r["classes"]) for r in merged] == [
        ("erfnet", 3), ("erfnet", 3), ("erfnet", 19), ("SegNet", 3), ("Mine", 3)]  # the model table's order
    table = deploy_report.markdown(rows)
    assert "| erfnet | 3 | 32x64 | ✓ all | ✗ 4/5, 1.5 ms, 12 KiB |" in table
    assert "- erfnet 32x64, ethos-u55-128: RESIZE_BILINEAR: unsupported scale-factor" in table
    assert "unsupported scale-factor" not in deploy_report.markdown(rows, reasons=False)


def test_readme_block_is_replaced_in_place(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(f"a\n{deploy_report.BEGIN}\nold\n{deploy_report.END}\nb\n")
    deploy_report.update_readme(str(path), "| new |\n")
    assert path.read_text() == f"a\n{deploy_report.BEGIN}\n| new |\n{deploy_report.END}\nb\n"
    path.write_text(f"a\n{deploy_report.END}\n{deploy_report.BEGIN}\n")
    with pytest.raises(ValueError, match="Expected .* once"):
        deploy_report.update_readme(str(path), "| new |\n")


def test_bad_arguments_and_files_are_clear_errors(tmp_path, capsys):
    for argv, message in ((["--output-dir", str(tmp_path)], "at least one --model or --reference"),
                          (["--reference", "nope", "--output-dir", str(tmp_path)], "--reference names among"),
                          (["--model", "erfnet", "--output-dir", str(tmp_path)], "NAME@HEIGHTxWIDTH"),
                          (["--model", "erfnet@32x64", "--output-dir", str(tmp_path), "--readme",
                            str(tmp_path / "missing.md")], "missing.md")):
        with pytest.raises(SystemExit):
            deploy_report.main(argv)
        assert message in capsys.readouterr().err
    bad = tmp_path / deploy_report.REPORT
    bad.write_text(json.dumps([{"model": "erfnet"}]))
    with pytest.raises(InvalidFileError, match="Expected .* list of rows"):
        deploy_report.read_report(str(bad))
    bad.write_text("{")
    with pytest.raises(InvalidFileError, match="deployment report"):
        deploy_report.read_report(str(bad))
