"""The docs stay true: the commands page is what the CLI's help says today, and every link of the README and the docs
— and every docs/… path the code names in a message or a help text — points at a file that exists."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE_DOC = re.compile(r"\bdocs/[A-Za-z0-9_./-]+\.(?:md|json|png)")


def test_the_commands_page_is_generated_from_the_help_of_today() -> None:
    from edge_stpm.cli_reference import markdown

    page = ROOT / "docs" / "commands.md"
    assert page.read_text() == markdown(), \
        "docs/commands.md is stale: python -m edge_stpm.cli_reference > docs/commands.md"


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _anchors(page: Path) -> set[str]:
    text = page.read_text()
    ids = set(re.findall(r'<a id="([^"]+)"', text))
    for h in re.findall(r"^#+\s+(.+)$", text, re.M):  # GitHub's heading anchors
        ids.add(re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-"))
    return ids


def test_every_link_of_the_readme_and_the_docs_resolves() -> None:
    broken = []
    for md in _markdown_files():
        for target in LINK.findall(md.read_text()):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue  # a web address or a same-page anchor
            path, _, anchor = target.partition("#")
            dest = (md.parent / path).resolve()
            if not dest.exists():
                broken.append(f"{md.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{md.relative_to(ROOT)}: {target} (no such anchor)")
    assert not broken, "\n".join(broken)


def test_every_docs_path_the_code_names_exists() -> None:
    """Help texts and error lines send users to docs/… files: each of them must exist."""
    named = {(m, py.relative_to(ROOT)) for py in (ROOT / "edge_stpm").rglob("*.py")
             for m in CODE_DOC.findall(py.read_text()) if "onnx-tensorrt" not in m and py.name != "trt_rules.py"}
    missing = sorted(f"{py}: {m}" for m, py in named if not (ROOT / m).exists())
    assert named and not missing, "\n".join(missing)
