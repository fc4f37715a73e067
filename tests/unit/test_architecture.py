"""The map stays true: docs/architecture.md names files that exist, every module of the
package, and the layers import-linter enforces; the README names every folder's job."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def named_paths(text: str) -> set[str]:
    """Every backticked ``rollbackd/...`` path a page names."""
    return set(re.findall(r"`(rollbackd/[\w/]+\.py)`", text))


def holds_code(path: Path) -> bool:
    """Whether a module holds more than its docstring (a bare package marker does not)."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return any(
        not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in body
    )


def test_every_file_the_map_names_exists() -> None:
    """A newcomer who follows docs/architecture.md to a file finds it there."""
    named = named_paths(ARCHITECTURE.read_text(encoding="utf-8"))
    assert named, "the map names no file"
    missing = sorted(path for path in named if not (ROOT / path).is_file())
    assert missing == []


def test_the_map_names_every_module_of_the_package() -> None:
    """A module added to rollbackd/ gets its line in docs/architecture.md, so the map
    never leaves a room out."""
    named = named_paths(ARCHITECTURE.read_text(encoding="utf-8"))
    modules = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "rollbackd").rglob("*.py")
        if holds_code(path)
    }
    assert sorted(modules - named) == []


def test_the_map_draws_the_layers_import_linter_enforces() -> None:
    """The layer list on the page is the contract's, in the same order, so the picture a
    newcomer reads is the rule the build enforces."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    block = text.split("<!-- layers -->", 1)[1].split("<!-- /layers -->", 1)[0]
    drawn = [line for line in block.strip().strip("`").strip().splitlines() if line]
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    layers = config["tool"]["importlinter"]["contracts"][0]["layers"]
    assert drawn == layers


def test_the_readme_names_each_folder_s_job() -> None:
    """The README's Development section has one line for each folder of rollbackd/ and of
    the repository a contributor works in."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Development", 1)[1]
    folders = {path.parent.name for path in (ROOT / "rollbackd").glob("*/__init__.py")}
    listed = set(re.findall(r"^- `rollbackd/(\w+)/`", section, flags=re.MULTILINE))
    assert sorted(folders - listed) == []
    for top in ("tests", "benchmarks", "deploy", "docs", "scripts"):
        assert re.search(rf"^- `{top}/`", section, flags=re.MULTILINE), top
