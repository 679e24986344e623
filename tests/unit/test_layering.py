"""The package's import graph: no two modules import each other, and data flows one way."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "sdm"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """``{module: sdm modules it imports anywhere in its body}`` (lazy imports included)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                candidates = [f"{node.module}.{alias.name}" for alias in node.names]
                found |= {c for c in candidates if c in modules} or {node.module}
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_no_two_modules_import_each_other():
    graph = imports()
    pairs = sorted({tuple(sorted((a, b))) for a, targets in graph.items() for b in targets
                    if a in graph.get(b, set())})
    assert pairs == []


def test_lower_layers_do_not_reach_up():
    """Data, models, losses and metrics know nothing of the engine, results or commands."""
    upper = ("sdm.engine", "sdm.scores", "sdm.report", "sdm.cli", "sdm.demo",
             "sdm.paper_commands", "sdm.tune", "sdm.inference")
    lower = ("sdm.data", "sdm.builders", "sdm.models", "sdm.loss_registry", "sdm.sdm_loss",
             "sdm.metrics")
    graph = imports()
    reaching_up = sorted((a, b) for a, targets in graph.items() if a.startswith(lower)
                         for b in targets if b.startswith(upper))
    assert reaching_up == []
    engine_to_commands = sorted((a, b) for a, targets in graph.items()
                                if a.startswith("sdm.engine") for b in targets
                                if b.startswith(upper[2:]))
    assert engine_to_commands == []


def test_builders_stand_apart():
    """Dataset builders use only the data layer, constants, errors and atomic files; only the
    `sdm data` build commands and the demo's dataset build import them."""
    graph = imports()
    allowed = ("sdm.builders", "sdm.data", "sdm.constants", "sdm.errors", "sdm.storage")
    builders_reach = sorted((a, b) for a, targets in graph.items() if a.startswith("sdm.builders")
                            for b in targets if not b.startswith(allowed))
    assert builders_reach == []
    importers = sorted({a for a, targets in graph.items() if not a.startswith("sdm.builders")
                        and any(b.startswith("sdm.builders") for b in targets)})
    assert importers == ["sdm.data.commands", "sdm.demo"]
