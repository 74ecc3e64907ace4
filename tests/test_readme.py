"""The README is a newcomer's first page: its commands must be what CI runs, it must stay short,
and every link in it and in docs/ must lead somewhere."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
README_BUDGET_BYTES = 6_000
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def _relative_links(text: str) -> list[str]:
    """Link targets that point into the repository (no scheme, not a bare anchor)."""
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:|#", t)]


def test_ci_runs_the_readme_commands_verbatim():
    install, tests = _bash_blocks(README)[:2]
    ci = (ROOT / ".ci" / "run").read_text()
    for command in (install, tests):
        assert command in ci.splitlines(), f"README command not in .ci/run: {command}"
    assert "pip install" in install and "physnn train" in install and "pytest" in tests


def test_getting_started_repeats_the_readme_commands():
    install, tests = _bash_blocks(README)[:2]
    guide = _bash_blocks((ROOT / "docs" / "getting-started.md").read_text())
    assert install in guide and tests in guide, "docs/getting-started.md differs from the README"


def test_readme_stays_a_short_first_page():
    size = len(README.encode())
    assert size <= README_BUDGET_BYTES, (
        f"README.md is {size} bytes, the budget is {README_BUDGET_BYTES}: move detail to docs/"
    )


def test_every_relative_link_resolves():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    broken = []
    for page in pages:
        for target in _relative_links(page.read_text()):
            path = target.split("#", 1)[0]
            if path and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, "links to missing files:\n" + "\n".join(broken)
