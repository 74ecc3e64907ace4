"""The benchmark suite (``python -m benchmarks``): outputs, the row contract, error rows, exit codes.

Only the ``machine`` module and small modules written to tmp_path run here: the real
measurements take minutes and belong to ``python -m benchmarks``, not to the tests.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks` is not installed: a bare `pytest` finds it here
    sys.path.append(str(ROOT))

from benchmarks import machine, suite  # noqa: E402
from benchmarks.suite import ROW_TYPES, RowError, format_markdown, validate_row  # noqa: E402

GOOD = {"group": "g", "name": "x at 4x4", "value": 2.0, "unit": "s", "baseline": "bare torch",
        "ratio": 1.5, "target": ">= 1x", "ok": True}


def _env(*paths: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, (ROOT, *paths)))}


def _module(tmp_path: Path, body: str) -> str:
    """Write a benchmark module with a unique name (no clash in sys.modules) into tmp_path."""
    name = f"bench_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(body)
    return name


def _rows_module(tmp_path: Path, rows: list[dict[str, Any]]) -> str:
    return _module(tmp_path, f"def rows(quick):\n    print('noise on stdout')\n    return {rows!r}\n")


def test_machine_only_writes_json_and_markdown(tmp_path):
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "machine",
                        "--out", str(out)], cwd=ROOT, env=_env(), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    record = json.loads((out / "benchmarks.json").read_text())
    keys = {"schema", "timestamp", "git", "quick", "machine", "modules", "rows", "summary"}
    assert keys <= set(record)
    assert record["quick"] is True
    assert [m["module"] for m in record["modules"]] == ["benchmarks.machine"]
    assert record["summary"]["errors"] == 0 and record["summary"]["rows"] == len(record["rows"]) >= 3
    for row in record["rows"]:
        validate_row(row)
        assert row["group"] == "machine"
    m = record["machine"]
    assert m["cpu_count"] >= 1 and m["torch"] == torch.__version__
    assert (m["gpu"] is None) == (not torch.cuda.is_available())
    if record["git"] is not None:
        assert len(record["git"]["commit"]) == 40
    md = (out / "benchmarks.md").read_text()
    assert p.stdout == md  # the table printed is the table written
    assert "## machine" in md and "| name | value | unit | baseline | ratio | target | ok |" in md
    assert "benchmarks" in p.stderr  # progress goes to stderr
    assert sorted(f.name for f in out.iterdir()) == ["benchmarks.json", "benchmarks.md"]  # no .part


def test_failing_and_missing_modules_become_error_rows(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(tmp_path))
    bad = _module(tmp_path, "def rows(quick):\n    raise RuntimeError('boom at 20x20')\n")
    helper = _module(tmp_path, "X = 1\n")
    wrong = _module(tmp_path, "def rows(quick):\n    return {'not': 'a list'}\n")
    good = _rows_module(tmp_path, [GOOD, {**GOOD, "name": "no ratio"} | {"ratio": "fast"},
                                   {k: v for k, v in GOOD.items() if k != "unit"}])
    missing = f"no_such_bench_{uuid.uuid4().hex[:8]}"
    mods = [bad, missing, helper, wrong, good]
    assert suite.main(["--modules", ",".join(mods), "--out", str(tmp_path / "o")]) == 0
    captured = capsys.readouterr()
    assert "noise on stdout" not in captured.out and "noise on stdout" in captured.err
    record = json.loads((tmp_path / "o" / "benchmarks.json").read_text())
    assert [m["module"] for m in record["modules"]] == mods  # the suite went on after each
    errors = {r["name"]: r["error"] for r in record["rows"] if "error" in r}
    assert errors[bad] == "RuntimeError: boom at 20x20"
    assert "not found" in errors[missing]
    assert "has no rows(quick)" in errors[helper]
    assert "returned dict, not a list" in errors[wrong]
    assert "boom at 20x20" in next(r["traceback"] for r in record["rows"] if r["name"] == bad)
    good_rows = [r for r in record["rows"] if "error" not in r]
    assert good_rows == [GOOD]
    good_errors = [r["error"] for r in record["rows"] if r["name"] == good]
    assert len(good_errors) == 2
    assert "'ratio'" in good_errors[0] and "'unit'" in good_errors[1]  # the bad key is named
    assert record["summary"] == {"rows": 1, "errors": 6, "missed": 0, "met": 1}
    md = (tmp_path / "o" / "benchmarks.md").read_text()
    assert "## errors" in md and "boom at 20x20" in md and md.index("## g") < md.index("## errors")


def test_error_names_the_missing_extra(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    name = _module(tmp_path, "import wavetorch_not_installed_xyz\n")
    (row,) = suite.run_module(name, quick=True)
    assert "No module named 'wavetorch_not_installed_xyz'" in row["error"]
    monkeypatch.setitem(suite._HINTS, "wavetorch_not_installed_xyz", "pip install -e '.[bench]'")
    (row,) = suite.run_module(name, quick=True)
    assert row["error"].endswith("pip install -e '.[bench]'")


def test_module_threads_are_restored(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    before = torch.get_num_threads()
    name = _module(tmp_path, "import torch\ndef rows(quick):\n"
                             f"    torch.set_num_threads({before + 1})\n    raise ValueError('x')\n")
    suite.run_module(name, quick=True)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(("rows", "check", "code"), [
    ([GOOD], False, 0),
    ([GOOD], True, 0),
    ([GOOD, {**GOOD, "ok": False}], False, 0),  # a missed target is a measurement
    ([GOOD, {**GOOD, "ok": False}], True, 1),
    ([GOOD, {**GOOD, "ok": None, "target": None}], True, 0),
    ([GOOD, {**GOOD, "value": "1"}], True, 1),  # an error row
])
def test_check_exit_status(tmp_path, monkeypatch, capsys, rows, check, code):
    monkeypatch.syspath_prepend(str(tmp_path))
    name = _rows_module(tmp_path, rows)
    argv = ["--modules", name, "--out", str(tmp_path / "o"), *(["--check"] if check else [])]
    assert suite.main(argv) == code


def test_check_fails_on_a_raising_module_in_a_subprocess(tmp_path):
    name = _module(tmp_path, "def rows(quick):\n    raise RuntimeError('boom')\n")
    argv = [sys.executable, "-m", "benchmarks", "--modules", name, "--out", str(tmp_path / "o")]
    for extra, code in (([], 0), (["--check"], 1)):
        p = subprocess.run(argv + extra, cwd=ROOT, env=_env(tmp_path), capture_output=True,
                           text=True, timeout=300)
        assert p.returncode == code, p.stderr
        assert "RuntimeError: boom" in p.stdout


@pytest.mark.parametrize("argv", [["--only", "acoustic,nope"], ["--only", ","], ["--bogus"],
                                  ["--only", "machine", "--modules", "x"]])
def test_usage_errors_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as e:
        suite.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("python -m benchmarks: error:")
    if "nope" in argv[-1]:
        assert "'nope'" in err and ",".join(suite.MODULES) in err


def test_only_keeps_the_fixed_order():
    a = suite.parse_args(["--only", "optical,machine"])
    assert a.selected == ["benchmarks.machine", "benchmarks.optical"]
    assert suite.parse_args([]).selected == [f"benchmarks.{m}" for m in suite.MODULES]


def test_validate_row_accepts_the_contract():
    assert validate_row(GOOD) is GOOD
    validate_row({**GOOD, "value": 3, "ratio": None, "baseline": None, "target": None, "ok": None})
    validate_row({**GOOD, "note": "extra keys are kept"})


@pytest.mark.parametrize(("change", "key"), [
    *[({k: None for k in [k]}, k) for k in ("group", "name", "value", "unit")],
    ({"value": True}, "value"),
    ({"value": math.nan}, "value"),
    ({"ratio": math.inf}, "ratio"),
    ({"ratio": 0.0}, "ratio"),
    ({"ratio": False}, "ratio"),
    ({"ok": 1}, "ok"),
    ({"baseline": 3}, "baseline"),
    ({"target": 5.0}, "target"),
    ({"name": ""}, "name"),
    ({"target": None}, "target"),  # ok=True without a target
])
def test_validate_row_names_the_bad_key(change, key):
    with pytest.raises(RowError, match=f"'{key}'"):
        validate_row({**GOOD, **change})


@pytest.mark.parametrize("key", list(ROW_TYPES))
def test_validate_row_names_a_missing_key(key):
    with pytest.raises(RowError, match=f"missing key '{key}'"):
        validate_row({k: v for k, v in GOOD.items() if k != key})


def test_validate_row_rejects_non_rows():
    with pytest.raises(RowError, match="must be a dict"):
        validate_row([GOOD])
    with pytest.raises(RowError, match="JSON"):
        validate_row({**GOOD, "extra": object()})


def test_markdown_marks_targets_and_escapes_pipes():
    md = format_markdown([GOOD, {**GOOD, "name": "a|b", "ok": False, "ratio": 0.5},
                          {**GOOD, "group": "h", "ok": None, "ratio": None}])
    assert md.index("## g") < md.index("## h")
    assert "| x at 4x4 | 2 | s | bare torch | 1.50 | >= 1x | ✓ |" in md
    assert "| a\\|b | 2 | s | bare torch | 0.50 | >= 1x | ✗ |" in md
    assert "| x at 4x4 | 2 | s | bare torch |  | >= 1x |  |" in md


def test_machine_rows_and_gpu_path(monkeypatch):
    rows = machine.rows(quick=True)
    for r in rows:
        validate_row(r)
    info = machine.info()
    if not torch.cuda.is_available():
        assert info["gpu"] is None and not any("GPU" in r["name"] for r in rows)

    class Props:
        name = "Fake GPU"
        total_memory = 80 * 2**30

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: Props())
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    gpu = machine.gpu_info()
    assert gpu is not None and gpu["name"] == "Fake GPU" and gpu["memory_gib"] == 80.0
    rows = machine.rows(quick=True, machine={**info, "gpu": gpu})
    assert validate_row(rows[-1])["value"] == 80.0 and "Fake GPU" in rows[-1]["name"]


def test_a_module_runs_alone(capsys):
    assert suite.run_alone(machine.rows, ["--quick"]) == 0
    assert "## machine" in capsys.readouterr().out
    assert suite.run_alone(lambda quick: [GOOD, {**GOOD, "ok": "yes"}], []) == 1
    out = capsys.readouterr().out
    assert "| x at 4x4 |" in out and "row 1: key 'ok'" in out


def test_standalone_scripts_still_run():
    """``benchmarks/`` became a package; its scripts must still run as ``python benchmarks/X.py``."""
    scripts = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py")
                     if p.name in {"throughput.py", "jobs_scaling.py", "acoustic_memory.py",
                                   "depth_scaling.py", "microwave_sensitivity.py",
                                   "serial_throughput.py", "sim_to_real.py", "wave_features.py"})
    assert len(scripts) == 8
    code = (
        "import runpy, sys\n"
        f"for s in {scripts!r}:\n"
        "    sys.argv = ['benchmarks/' + s, '--help']\n"
        "    try:\n"
        "        runpy.run_path('benchmarks/' + s, run_name='__main__')\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, (s, e.code)\n"
        "    print('ok', s)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("ok ") == 8


def test_the_microwave_module_measures_the_flips_solvers_error_against_the_dense_solve():
    from benchmarks import microwave

    (row,) = microwave.agreement_rows()
    suite.validate_row(row)
    assert row["ok"] is True and 0 < row["value"] <= 1e-3  # 0: a solver compared with itself
