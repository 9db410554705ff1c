"""The package's floors: every import of its own modules (those inside functions too) runs
downwards or within a floor, and no import circle exists."""

import ast

from conftest import REPO

PACKAGE = "recbole_mmssl"
# floors, top first; a module may import its own floor and the floors below it
FLOORS = [
    ("tools and command entries", ("recbole_mmssl.experiments", "recbole_mmssl.compare", "recbole_mmssl.analyze",
                                   "recbole_mmssl.checkpoint")),
    ("quick start", ("recbole_mmssl.quick_start",)),
    ("config and models", ("recbole_mmssl.config", "recbole_mmssl.model")),
    ("plugin discovery", ("recbole_mmssl.utils",)),
    ("data, training, evaluation", ("recbole_mmssl.data", "recbole_mmssl.trainer", "recbole_mmssl.evaluation")),
    ("shared low pieces", ("recbole_mmssl.errors", "recbole_mmssl.common")),
]


def module_name(path):
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules():
    return {module_name(p): p for p in (REPO / PACKAGE).rglob("*.py")}


def imports(path, known):
    """Every module of the package that ``path`` imports, wherever the import statement stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                     for alias in node.names]
        else:
            continue
        found.update(name for name in names if name.startswith(f"{PACKAGE}.") and name in known)
    return found


def floor(name):
    for level, (_, prefixes) in enumerate(FLOORS):
        if any(name == p or name.startswith(f"{p}.") for p in prefixes):
            return level
    raise AssertionError(f"module {name} is on no floor; add it to FLOORS")


def graph():
    known = modules()
    return {name: imports(path, known) for name, path in known.items() if name != PACKAGE}


def test_every_import_runs_down_or_within_a_floor():
    upward = [f"{a} ({FLOORS[floor(a)][0]}) imports {b} ({FLOORS[floor(b)][0]})"
              for a, targets in graph().items() for b in targets if floor(b) < floor(a)]
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    edges = graph()
    state, stack, circles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                circles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not circles, "\n".join(" -> ".join(c) for c in circles)


def test_the_checker_sees_imports_inside_functions(tmp_path):
    """The reader finds an import placed in a function body, so a hidden upward import fails."""
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from recbole_mmssl.experiments.compare import main\n    return main\n")
    assert imports(source, modules()) == {"recbole_mmssl.experiments.compare"}


def test_few_modules_at_the_top():
    top = sorted(p.stem for p in (REPO / PACKAGE).glob("*.py") if p.stem != "__init__")
    assert len(top) <= 9, top
