"""The wings of the house and the one rule between them: imports point down the flow.

    data -> models -> runs -> (backends, analysis) -> deploy -> cli

A module may import its own wing, any wing before it, and the root modules (``paths``,
``processes``); ``backends`` and ``analysis`` stand side by side and import neither
each other. :func:`violations` reads every module's imports (those inside functions
too) and lists each that runs back up; ``python -m harness.wings`` prints them, and the
test suite fails on any (``docs/design.md``).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

from harness.paths import PROJECT_ROOT

__all__ = ["RANK", "wing_of", "violations"]

RANK = {"root": 0, "data": 1, "models": 2, "runs": 3, "backends": 4, "analysis": 4, "deploy": 5, "cli": 6}
SIDE_BY_SIDE = {frozenset({"backends", "analysis"})}
ROOT_MODULES = {"harness", "harness.files", "harness.paths", "harness.processes", "harness.wings"}


def wing_of(module: str) -> str | None:
    """``harness.runs.trial`` -> ``runs``; ``backends.keras`` -> ``backends``; None outside the project."""
    parts = module.split(".")
    if parts[0] == "backends":
        return "backends"
    if parts[0] != "harness":
        return None
    if module in ROOT_MODULES:
        return "root"
    if module == "harness.__main__":
        return "cli"
    return parts[1] if len(parts) > 1 and parts[1] in RANK else "root"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.AST, module: str, is_package: bool):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, False
        elif isinstance(node, ast.ImportFrom):
            if node.level:   # relative: resolve against this module's package
                base = module.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield node.lineno, target, False
            for alias in node.names:   # `from harness import data` imports the wing harness.data
                yield node.lineno, f"{target}.{alias.name}", True


def violations(root: Path = PROJECT_ROOT) -> list[str]:
    """Every import in harness/ and backends/ that points back up the flow, as 'file:line: why'."""
    found = []
    for package in ("harness", "backends"):
        for path in sorted((root / package).rglob("*.py")):
            module = _module_name(path, root)
            mine = wing_of(module)
            tree = ast.parse(path.read_text(), str(path))
            for line, target, from_name in _imports(tree, module, path.name == "__init__.py"):
                theirs = wing_of(target)
                if theirs is None or theirs == mine or target in ("harness", "backends"):
                    continue
                if from_name and not _is_module(root, target):
                    continue   # `from harness.runs.trial import TrialConfig`: a name, not a module
                back_up = RANK[theirs] > RANK[mine]
                sideways = frozenset({mine, theirs}) in SIDE_BY_SIDE
                if back_up or sideways:
                    found.append(f"{path.relative_to(root)}:{line}: {mine} imports {target} ({theirs}), "
                                 + ("which stands beside it" if sideways else "which comes after it"))
    return sorted(set(found))


def _is_module(root: Path, dotted: str) -> bool:
    base = root.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


if __name__ == "__main__":
    problems = violations()
    print("\n".join(problems) or "no import runs back up the flow")
    sys.exit(1 if problems else 0)
