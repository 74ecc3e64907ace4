"""The README is what a newcomer runs: its commands must be what CI runs, its example must work."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_ci_runs_the_readme_commands_verbatim():
    install, tests = _blocks("bash")[:2]
    ci = (ROOT / ".ci" / "run").read_text()
    for command in (install.strip(), tests.strip()):
        assert command in ci.splitlines(), f"README command not in .ci/run: {command}"
    assert "pip install" in install and "physnn train" in install and "pytest" in tests


def test_python_example_runs(tmp_path):
    (code,) = _blocks("python")
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr
    assert "400 8" in p.stdout
    assert "is outside the allowed domain [0, 1]" in p.stdout
    accs = re.search(r"PhyLL (\S+)  logistic regression (\S+)", p.stdout)
    assert accs and float(accs.group(1)) > 0.85
