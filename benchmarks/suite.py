"""One command for every benchmark: ``python -m benchmarks [--quick] [--only ...] [--out DIR]
[--check]``.

Each module in ``MODULES`` exposes ``rows(quick) -> list[dict]`` (the row contract:
``ROW_TYPES``). The suite calls them in order, in one process, so every ratio in the output was
measured on the same machine in the same run, and writes ``DIR/benchmarks.json`` (machine,
time, git commit, every row) and ``DIR/benchmarks.md`` (one table per group), both atomically,
and prints the Markdown. A module that is missing, raises, or returns a malformed row becomes
an *error row* naming the module and the problem; the others still run.

Exit status: 0 (a missed target is a measurement, not a failure), unless ``--check``: then 1 if
any target is missed or any error row exists. Usage errors exit 2 with one line.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import json
import math
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from physnn.core.atomic import write_text_atomic

# Run order: the machine record first (its load average is the one at the start), the cheap
# bandwidth limits next, the long epoch and loaded-machine measurements last.
MODULES: tuple[str, ...] = ("machine", "limits", "acoustic", "wave_gradient", "optical",
                            "microwave", "epoch", "loaded", "executors")
PACKAGE = "benchmarks"
DEFAULT_OUT = "bench-out"
SCHEMA = 1

_NONE = type(None)
# Every row has exactly these keys at least (extra JSON-ready keys are kept in the JSON only).
ROW_TYPES: dict[str, tuple[type, ...]] = {
    "group": (str,),
    "name": (str,),
    "value": (float, int),
    "unit": (str,),
    "baseline": (str, _NONE),
    "ratio": (float, int, _NONE),
    "target": (str, _NONE),
    "ok": (bool, _NONE),
}
# Extra packages some modules need, with the command that installs them: named in error rows.
_HINTS = {"wavetorch": "pip install -e '.[bench]'", "skimage": "pip install -e '.[bench]'"}


class RowError(ValueError):
    """A row that breaks the row contract; the message names the offending key."""


def validate_row(row: object) -> dict[str, Any]:
    """Check one row against the contract and return it; raise RowError naming the bad key.

    ``value`` must be a finite number, ``ratio`` a finite positive number or None (bools are
    rejected where numbers are expected: ``True`` is an int to Python, not a measurement), and
    ``ok`` may be set only with a ``target``, so every ✓/✗ says what it was checked against.
    """
    if not isinstance(row, dict):
        raise RowError(f"a row must be a dict, not {type(row).__name__}")
    for key, types in ROW_TYPES.items():
        if key not in row:
            raise RowError(f"row is missing key {key!r}")
        v = row[key]
        if key != "ok" and isinstance(v, bool) or not isinstance(v, types):
            names = " or ".join("None" if t is _NONE else t.__name__ for t in types)
            raise RowError(f"key {key!r} must be {names}, not {type(v).__name__} ({v!r})")
    if not math.isfinite(row["value"]):
        raise RowError(f"key 'value' must be finite, not {row['value']!r}")
    ratio = row["ratio"]
    if ratio is not None and not (math.isfinite(ratio) and ratio > 0):
        raise RowError(f"key 'ratio' must be finite and > 0, not {ratio!r}")
    if row["ok"] is not None and row["target"] is None:
        raise RowError("key 'target' is None but 'ok' is set: a target met or missed must be named")
    if not row["group"] or not row["name"]:
        raise RowError(f"key {'group' if not row['group'] else 'name'!r} must not be empty")
    try:
        json.dumps(row, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise RowError(f"row is not JSON-ready: {e}") from None
    return row


def error_row(module: str, message: str, tb: str | None = None) -> dict[str, Any]:
    """The row standing for a module (or one of its rows) that could not be measured."""
    return {"group": "errors", "name": module, "value": None, "unit": "", "baseline": None,
            "ratio": None, "target": None, "ok": False, "error": message, "traceback": tb}


def is_error(row: dict[str, Any]) -> bool:
    return "error" in row


def _describe(e: BaseException, module: str) -> str:
    """One line: what went wrong, with the fix where the suite knows it."""
    if isinstance(e, ModuleNotFoundError) and e.name is not None:
        if module == e.name or module.startswith(e.name + "."):
            return f"module {module} not found (not written or not merged yet?)"
        hint = _HINTS.get(e.name.split(".")[0])
        if hint:
            return f"needs {e.name!r}, which is not installed: {hint}"
    return f"{type(e).__name__}: {e}".splitlines()[0]


def run_module(module: str, quick: bool) -> list[dict[str, Any]]:
    """Import ``module``, call its ``rows(quick)``, validate; failures become error rows.

    The module's stdout goes to stderr (stdout carries the Markdown), and torch's thread
    count is restored after it, so a module pinning one thread does not slow the next.
    """
    import torch

    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            mod = importlib.import_module(module)
            fn: Callable[[bool], object] | None = getattr(mod, "rows", None)
            if not callable(fn):
                return [error_row(module, f"{module} has no rows(quick) function "
                                          "(a helper module? remove it from MODULES)")]
            result = fn(quick)
    except (Exception, SystemExit) as e:
        return [error_row(module, _describe(e, module), traceback.format_exc())]
    finally:
        torch.set_num_threads(threads)
    if not isinstance(result, list):
        return [error_row(module, f"rows(quick) returned {type(result).__name__}, not a list")]
    out: list[dict[str, Any]] = []
    for i, row in enumerate(result):
        try:
            out.append(validate_row(row))
        except RowError as e:
            label = row.get("name") if isinstance(row, dict) else None
            out.append(error_row(module, f"row {i} ({label!r}): {e}"))
    return out


def git_state(root: Path) -> dict[str, Any] | None:
    """Commit and whether the tree had uncommitted changes; None outside a git checkout."""
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()

        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return None


def _cell(v: Any, fmt: str = "") -> str:
    if v is None:
        return ""
    s = format(v, fmt) if fmt else str(v)
    return s.replace("|", "\\|").replace("\n", " ")


def format_markdown(rows: Sequence[dict[str, Any]], header: str = "") -> str:
    """One table per group, in first-seen order; errors last, with the module and message."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault("errors" if is_error(r) else r["group"], []).append(r)
    parts = [header] if header else []
    for group, rs in sorted(groups.items(), key=lambda kv: kv[0] == "errors"):
        if group == "errors" and all(is_error(r) for r in rs):
            lines = ["## errors\n\n| module | error |\n|---|---|"]
            lines += [f"| {_cell(r['name'])} | {_cell(r['error'])} |" for r in rs]
        else:
            lines = [f"## {group}\n", "| name | value | unit | baseline | ratio | target | ok |",
                     "|---|---:|---|---|---:|---|:-:|"]
            for r in rs:
                ok = {True: "✓", False: "✗", None: ""}[r["ok"]]
                lines.append(f"| {_cell(r['name'])} | {_cell(r['value'], '.4g')} | {_cell(r['unit'])}"
                             f" | {_cell(r['baseline'])} | {_cell(r['ratio'], '.2f')}"
                             f" | {_cell(r['target'])} | {ok} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _header(record: dict[str, Any]) -> str:
    """Title, when, which commit, on what machine, and the time each module took."""
    m = record["machine"]
    gpu = f", GPU {m['gpu']['name']}" if m["gpu"] else ""
    commit = record["git"]["commit"][:10] if record["git"] else "unknown"
    load = m["load_average"][0] if m["load_average"] else "?"
    took = ", ".join(f"{d['module'].rsplit('.', 1)[-1]} {d['seconds']:.1f}" for d in record["modules"])
    return (f"# physnn benchmarks\n\n{record['timestamp']}, commit {commit}"
            f"{' (quick)' if record['quick'] else ''}; {m['cpu']}, "
            f"{m['usable_cores'] or m['cpu_count']} usable cores, load {load} at start, "
            f"torch {m['torch']}{gpu}. Ratio: physnn's speed / the baseline's (> 1: physnn is "
            f"faster) unless the unit says otherwise.\n\nSeconds per module: {took}.")


def run_alone(rows: Callable[[bool], list[dict[str, Any]]], argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.NAME [--quick]``: one module's rows, validated, as Markdown."""
    p = _Parser(prog=f"python -m {PACKAGE}.{Path(sys.argv[0]).stem}",
                description="Run one benchmark module and print its rows.")
    p.add_argument("--quick", action="store_true", help="short run (under ~60 s)")
    a = p.parse_args(argv)
    checked = []
    for i, row in enumerate(rows(a.quick)):
        try:
            checked.append(validate_row(row))
        except RowError as e:
            checked.append(error_row(getattr(rows, "__module__", "?"), f"row {i}: {e}"))
    print(format_markdown(checked), end="")
    return 1 if any(is_error(r) for r in checked) else 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """Usage errors: one line on stderr, exit status 2 (argparse prints the usage too)."""
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = _Parser(prog="python -m benchmarks", description=__doc__.split("\n\n")[1])
    p.add_argument("--quick", action="store_true", help="short runs (under ~60 s a module)")
    p.add_argument("--only", default=None,
                   help=f"comma-separated modules to run, from: {','.join(MODULES)}")
    p.add_argument("--out", default=DEFAULT_OUT, type=Path,
                   help=f"folder for benchmarks.json and benchmarks.md (default {DEFAULT_OUT}/)")
    p.add_argument("--check", action="store_true",
                   help="exit 1 if a target is missed or a module fails")
    # Tests: run importable module paths instead of the list (e.g. a failing module in tmp).
    p.add_argument("--modules", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.only is not None and a.modules is not None:
        p.error("--only and --modules exclude each other")
    if a.modules is not None:
        a.selected = [m for m in a.modules.split(",") if m]
    elif a.only is not None:
        names = [m.strip() for m in a.only.split(",") if m.strip()]
        unknown = [m for m in names if m not in MODULES]
        if unknown or not names:
            p.error(f"unknown module {', '.join(map(repr, unknown)) or '(none given)'} in --only;"
                    f" allowed: {','.join(MODULES)}")
        a.selected = [f"{PACKAGE}.{m}" for m in MODULES if m in names]  # the fixed order
    else:
        a.selected = [f"{PACKAGE}.{m}" for m in MODULES]
    return a


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected modules, write the JSON and Markdown, print the Markdown."""
    a = parse_args(argv)
    from tqdm import tqdm

    from benchmarks import machine

    started = dt.datetime.now(dt.UTC)
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "timestamp": started.isoformat(timespec="seconds"),
        "git": git_state(Path(__file__).resolve().parents[1]),
        "quick": a.quick,
        "machine": machine.info(),
        "modules": [],
        "rows": [],
    }
    rows: list[dict[str, Any]] = record["rows"]
    bar = tqdm(a.selected, desc="benchmarks", unit="module", file=sys.stderr)
    for module in bar:
        bar.set_postfix_str(module.rsplit(".", 1)[-1])
        t0 = time.perf_counter()
        got = run_module(module, a.quick)
        rows.extend(got)
        record["modules"].append({"module": module, "seconds": round(time.perf_counter() - t0, 3),
                                  "rows": sum(not is_error(r) for r in got),
                                  "errors": sum(is_error(r) for r in got)})
    bar.close()
    errors = [r for r in rows if is_error(r)]
    missed = [r for r in rows if not is_error(r) and r["ok"] is False]
    record["summary"] = {"rows": len(rows) - len(errors), "errors": len(errors),
                         "missed": len(missed), "met": sum(r["ok"] is True for r in rows)}
    md = format_markdown(rows, _header(record))
    write_text_atomic(a.out / "benchmarks.json", json.dumps(record, indent=1, allow_nan=False) + "\n")
    write_text_atomic(a.out / "benchmarks.md", md)
    print(md, end="")
    print(f"{len(rows) - len(errors)} rows, {len(missed)} missed targets, {len(errors)} errors; "
          f"written to {a.out}/benchmarks.json and .md", file=sys.stderr)
    return 1 if a.check and (errors or missed) else 0
