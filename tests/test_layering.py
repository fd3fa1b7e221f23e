"""The libraries (``dift_plugin``, ``attacks``) never import the harness that composes them."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return names | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


@pytest.mark.parametrize("package", ["dift_plugin", "attacks"])
def test_a_library_does_not_import_the_harness(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    offending = {str(f.relative_to(ROOT)): sorted(m for m in imported_modules(f) if m.split(".")[0] == "harness")
                 for f in files}
    assert not {f: m for f, m in offending.items() if m}
