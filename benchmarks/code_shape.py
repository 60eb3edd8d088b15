"""Modules over 500 lines and functions over 80 (def line to last line, decorators excluded): the
figures ARCHITECTURE.md's rules are checked against.

    python benchmarks/code_shape.py [PACKAGE_DIR]     # default: esrcli
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def shape(root: Path, module_limit: int = 500, function_limit: int = 80) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    modules, functions = [], []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        name = str(path.relative_to(root.parent))
        if (lines := len(text.splitlines())) > module_limit:
            modules.append((name, lines))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (length := node.end_lineno - node.lineno + 1) > function_limit:
                functions.append((f"{name}:{node.name}", length))
    return modules, functions


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "esrcli")
    modules, functions = shape(root)
    print(f"modules over 500 lines: {len(modules)}", *(f"  {n} {k}" for n, k in modules), sep="\n")
    print(f"functions over 80 lines: {len(functions)}", *(f"  {n} {k}" for n, k in functions), sep="\n")


if __name__ == "__main__":
    main()
