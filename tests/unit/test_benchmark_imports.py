"""Every name the benchmarks import from recfunnel exists (imports inside functions included).

The benchmarks run only under ``make bench``; a renamed or moved name would otherwise show up
there, minutes into a run, and not in ``make test``.
"""

import ast
import importlib
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_the_benchmarks_import_only_names_that_exist():
    missing = []
    files = sorted(BENCHMARKS.glob("*.py"))
    assert files
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("recfunnel")):
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                if hasattr(module, alias.name):
                    continue
                try:
                    importlib.import_module(f"{node.module}.{alias.name}")
                except ImportError:
                    missing.append(f"{path.name}: from {node.module} import {alias.name}")
    assert missing == []
