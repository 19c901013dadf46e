"""No import cycles among dec2vec's modules: each module can be read knowing only what it imports."""

import ast
from pathlib import Path

import dec2vec

ROOT = Path(dec2vec.__file__).parent


def _module_name(path: Path) -> str:
    return ".".join(("dec2vec", *path.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")


def _runtime_imports(tree: ast.AST) -> set[str]:
    """Every dec2vec module imported when the code runs (function-level too; ``if TYPE_CHECKING`` not)."""
    found: set[str] = set()
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(child) for child in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dec2vec"):
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("dec2vec")}
    return found


def test_no_import_cycles():
    modules = {_module_name(path): path for path in ROOT.rglob("*.py")}
    graph = {
        name: {m for m in _runtime_imports(ast.parse(path.read_text())) if m in modules and m != name}
        for name, path in modules.items()
    }
    packages = {name for name, path in modules.items() if path.name == "__init__.py"}

    def reaches(start: str, goal: str) -> list[str] | None:
        """A path of imports from start to goal, not passing through package __init__ re-exports."""
        stack, seen = [(start, [start])], {start}
        while stack:
            node, path = stack.pop()
            for dep in graph[node]:
                if dep == goal:
                    return [*path, dep]
                if dep not in seen and dep not in packages:
                    seen.add(dep)
                    stack.append((dep, [*path, dep]))
        return None

    cycles = [cycle for name in graph if name not in packages if (cycle := reaches(name, name))]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
