"""The documentation site builds cleanly, shows every page, documents every package, and its
Python example runs."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MKDOCS_YML = (ROOT / "mkdocs.yml").read_text()
NAV_PAGE = re.compile(r"^\s*-\s+(?:[^:\n]+:\s+)?(\S+\.md)\s*$", flags=re.M)


def _nav_pages() -> list[str]:
    nav = MKDOCS_YML.split("\nnav:", 1)[1]
    nav = re.split(r"\n\S", nav, maxsplit=1)[0]  # up to the next top-level key
    return NAV_PAGE.findall(nav)


def test_site_builds_strict(tmp_path):
    missing = [m for m in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python", "material")
               if importlib.util.find_spec(m.split(".")[0]) is None]
    if missing:
        pytest.skip(f"the docs tools are not installed ({', '.join(missing)}): pip install -e '.[dev]'")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert (tmp_path / "site" / "api" / "core" / "index.html").exists()


def test_every_page_is_in_the_nav():
    nav = _nav_pages()
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(set(nav)) == pages, (
        f"not in the nav of mkdocs.yml: {sorted(set(pages) - set(nav))}; "
        f"in the nav but missing: {sorted(set(nav) - set(pages))}"
    )
    assert len(nav) == len(set(nav)), "a page is in the nav twice"


def test_every_package_has_an_api_page():
    packages = sorted(p.parent.name for p in (ROOT / "physnn").glob("*/__init__.py"))
    documented = {}
    for page in _nav_pages():
        for name in re.findall(r"^::: physnn\.(\w+)\s*$", (DOCS / page).read_text(), flags=re.M):
            documented[name] = page
    missing = [p for p in packages if p not in documented]
    assert not missing, (
        f"no API page (docs/api/NAME.md holding '::: physnn.NAME', in the nav) for: {missing}"
    )


def test_getting_started_example_runs(tmp_path):
    text = (DOCS / "getting-started.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr
    assert "400 8" in p.stdout
    assert "is outside the allowed domain [0, 1]" in p.stdout
    accs = re.search(r"PhyLL (\S+)  logistic regression (\S+)", p.stdout)
    assert accs and float(accs.group(1)) > 0.85
