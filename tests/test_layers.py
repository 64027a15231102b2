"""The layering of docs/architecture.md, checked on the source: one folder per layer, imports point down, no
import circles, one definition of each shared word.

These read the code with ``ast`` (nothing is imported), so they hold for every module, also ones no other
test happens to import. Imports inside functions count like any other; only an import under
``if TYPE_CHECKING:`` does not (it never runs).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("aiflow_notebook", "kernel_magics", "dl_on_flink")
VOCABULARY = ROOT / "aiflow_notebook" / "core" / "vocabulary.py"

# --- reading the imports ------------------------------------------------------------------------------------


@cache
def _modules() -> dict[str, Path]:
    """Every module of ours by dotted name (Alembic's migration scripts are package data, not modules)."""
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts or "node_modules" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _resolve(name: str) -> str | None:
    """The module an imported name lives in: the longest dotted prefix that is one of our modules."""
    modules = _modules()
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (they never run)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    return skipped


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """``(module of ours, line)`` for every import in ``path`` that runs, also inside functions."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = _type_checking_only(tree)
    names: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")
                if path.name != "__init__.py":
                    package = package[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([base] if base else []))
            names += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    found = []
    for name, line in names:
        if name.startswith(PACKAGES) and (target := _resolve(name)) and target != module:
            found.append((target, line))
    return found


@cache
def _edges() -> dict[str, dict[str, int]]:
    """importer -> {imported module: first line}."""
    edges: dict[str, dict[str, int]] = defaultdict(dict)
    for module, path in _modules().items():
        for target, line in _imports(module, path):
            edges[module].setdefault(target, line)
    return edges


# --- the layers ---------------------------------------------------------------------------------------------

# (layer, the modules in it, the layers it may import besides itself). The order is the floor plan of
# docs/architecture.md; a layer that is not listed as importable is out of reach, whatever its floor.
BELOW_ENGINES = ("core", "storage", "events", "meta", "sdk")
LAYERS: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("core", ("aiflow_notebook.core",), ()),
    ("storage", ("aiflow_notebook.storage",), ("core",)),
    ("events", ("aiflow_notebook.events",), ("core", "storage")),
    ("meta", ("aiflow_notebook.meta",), ("core", "storage", "events")),
    ("sdk", ("aiflow_notebook.sdk",), ("core", "storage", "events", "meta")),
    ("dl_on_flink", ("dl_on_flink",), ("core", "events")),
    ("engines", ("aiflow_notebook.engines",), (*BELOW_ENGINES, "dl_on_flink")),
    ("scheduler", ("aiflow_notebook.scheduler",), (*BELOW_ENGINES, "dl_on_flink", "engines")),
    ("session", ("aiflow_notebook.session",), (*BELOW_ENGINES, "engines", "scheduler", "sandbox")),
    ("facade", ("aiflow_notebook.__init__", "aiflow_notebook._moved"), ("core", "sdk", "session")),
    ("widgets", ("aiflow_notebook.widgets",), (*BELOW_ENGINES, "engines", "scheduler", "session")),
    ("server_extension", ("aiflow_notebook.server_extension",),
     (*BELOW_ENGINES, "engines", "scheduler", "session")),
    ("sandbox", ("aiflow_notebook.sandbox",), ("core", "storage", "engines")),  # engines: the Flink REST client
    ("cli", ("aiflow_notebook.cli",),
     (*BELOW_ENGINES, "dl_on_flink", "engines", "scheduler", "session", "facade", "sandbox")),
    ("kernel_magics", ("kernel_magics",), (*BELOW_ENGINES, "engines", "scheduler", "session", "facade", "widgets")),
    ("testing", ("aiflow_notebook.testing",),
     (*BELOW_ENGINES, "dl_on_flink", "engines", "scheduler", "session", "facade", "widgets", "server_extension",
      "sandbox", "cli")),
]


def _layer(module: str) -> str:
    name = "aiflow_notebook.__init__" if module == "aiflow_notebook" else module
    for layer, prefixes, _allowed in LAYERS:
        if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes):
            return layer
    raise AssertionError(f"{module} is in no layer: put it in a folder of docs/architecture.md's plan "
                         "(and add a new folder to LAYERS in tests/test_layers.py and to that page)")


def test_every_module_is_in_a_layer_and_the_root_holds_at_most_eight():
    for module in _modules():
        _layer(module)
    root = sorted(p.name for p in (ROOT / "aiflow_notebook").glob("*.py") if p.name != "__init__.py")
    assert len(root) <= 8, f"modules directly under aiflow_notebook/: {root}; put them in a layer's folder"


def test_imports_point_downward():
    allowed = {layer: set(may) | {layer} for layer, _prefixes, may in LAYERS}
    broken = []
    for importer, targets in sorted(_edges().items()):
        for target, line in sorted(targets.items()):
            if _layer(target) not in allowed[_layer(importer)]:
                broken.append(f"{_modules()[importer].relative_to(ROOT)}:{line}: {importer} ({_layer(importer)}) "
                              f"imports {target} ({_layer(target)})")
    assert not broken, "imports that break the layering of docs/architecture.md:\n" + "\n".join(broken)


def _circles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []

    def visit(module: str) -> None:  # depth is bounded by the number of modules (a few hundred)
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in edges.get(module, {}):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return circles


def test_no_import_circles():
    edges = _edges()
    report = []
    for circle in _circles(edges):
        ties = [f"  {a} -> {b} ({_modules()[a].relative_to(ROOT)}:{edges[a][b]})"
                for a in circle for b in circle if b in edges.get(a, {})]
        report.append("circle: " + ", ".join(circle) + "\n" + "\n".join(ties))
    assert not report, "modules that import each other (also through imports inside functions):\n" + "\n".join(report)


def test_the_circle_finder_finds_a_circle_through_three_modules():
    edges = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert _circles(edges) == [["a", "b", "c"]]
    assert _circles({"a": {"b": 1}, "b": {}}) == []


def test_an_import_inside_a_function_counts_and_one_for_type_checking_does_not(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import aiflow_notebook.sdk.graph\n"
                      "def f():\n    from aiflow_notebook.meta import store\n")
    assert _imports("aiflow_notebook.probe", source) == [("aiflow_notebook.meta.store", 5)]


def test_only_the_top_imports_the_sdk_root():
    """Modules import the module they need (``from aiflow_notebook.sdk import graph``), never through the
    package root (``from aiflow_notebook import graph``, ``import aiflow_notebook``): the root is the SDK's
    front door, and a layer that went through it would depend on every module the SDK loads."""
    allowed = {"aiflow_notebook", "aiflow_notebook.cli.aiflow", "aiflow_notebook.cli.doctor", "kernel_magics",
               "kernel_magics.magics"}
    found = []
    for module, path in _modules().items():
        if module in allowed or not module.startswith("aiflow_notebook"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.ImportFrom) and node.module == "aiflow_notebook" and not node.level) or (
                    isinstance(node, ast.Import) and any(a.name == "aiflow_notebook" for a in node.names)):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, "imports through the package root:\n" + "\n".join(found)


# --- one definition of each shared word -------------------------------------------------------------------

# Words that core/vocabulary.py defines; a string literal equal to one of them anywhere else is a second
# definition.
SHARED_WORDS = {"JOB_STATUS_CHANGED", "WORKFLOW_RUN_STATUS_CHANGED", "DATASET_UPDATED", "MODEL_GENERATED",
                "MODEL_VALIDATED", "MODEL_DEPLOYED", "MODEL_DEPRECATED", "MODEL_DELETED"}
FINAL = {"FINISHED", "FAILED", "KILLED"}


def test_shared_words_are_defined_only_in_vocabulary():
    """Event type names, the set of final states and the wildcard appear as literals in one module only."""
    found = []
    for path in _modules().values():
        if path == VOCABULARY or path.is_relative_to(ROOT / "dl_on_flink"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Constant) and node.value in SHARED_WORDS:
                found.append(f"{where} {node.value!r}")
            elif isinstance(node, ast.Tuple | ast.Set | ast.List):
                values = {e.value for e in node.elts if isinstance(e, ast.Constant)}
                if FINAL <= values:
                    found.append(f"{where} a collection of the final states")
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and node.value.value == "*":
                found.append(f"{where} a wildcard constant")
    assert not found, "defined outside aiflow_notebook/core/vocabulary.py:\n" + "\n".join(found)


# Code shapes that belong to one module each: (what the line contains, the one module that may write it, the
# concept). Another place that needs the concept calls that module.
ONE_HOME = [
    ("time.monotonic() +", "aiflow_notebook/core/waiting.py", "a deadline loop: use core.waiting"),
    ("os.killpg(", "aiflow_notebook/core/processes.py", "ending a process group: use core.processes"),
    ("os.fsync(", "aiflow_notebook/core/files.py", "an atomic private file: use core.files.write_atomic"),
    ("mode=0o700", "aiflow_notebook/core/files.py", "a private directory: use core.files.private_dir"),
]


# The one allowed copy: the job launcher imports the standard library only (it starts before every job;
# importing the package costs ~90 ms of CPU a job), so it writes its exit status with a copy of write_atomic.
STANDALONE = {("os.fsync(", "aiflow_notebook/engines/launcher.py")}


def test_the_job_launcher_imports_the_standard_library_only():
    path = ROOT / "aiflow_notebook" / "engines" / "launcher.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, sorted(imported - set(sys.stdlib_module_names))


def test_each_shared_routine_is_written_in_one_module():
    found = []
    for path in _modules().values():
        text = path.read_text()
        for needle, home, concept in ONE_HOME:
            if (needle, str(path.relative_to(ROOT))) in STANDALONE:
                continue
            if needle in text and path != ROOT / home:
                lines = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
                found.append(f"{path.relative_to(ROOT)}:{lines[0]}: {needle!r} ({concept})")
    assert not found, "written outside their one module:\n" + "\n".join(found)


# Job states are words of the vocabulary; Flink's own job states are spelled in engines/flink_rest.py (some
# are the same words); dl_on_flink's application master has a state machine of its own.
STATE_WORDS = {"INIT", "STARTING", "RUNNING", "FINISHED", "FAILED", "KILLED", "CANCELED"}
STATE_HOMES = {VOCABULARY, ROOT / "aiflow_notebook" / "engines" / "flink_rest.py"}


# "default" names the default namespace, project and scheduler (core/vocabulary.py) and, in the SDK, the
# workflow and job a cell without a block falls into (sdk/graph.py).
DEFAULT_HOMES = {VOCABULARY, ROOT / "aiflow_notebook" / "sdk" / "graph.py"}


def test_job_and_run_states_and_defaults_are_spelled_only_in_the_vocabulary():
    found = []
    for path in _modules().values():
        if path.is_relative_to(ROOT / "dl_on_flink"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
                continue
            if (node.value in STATE_WORDS and path not in STATE_HOMES) or (
                    node.value == "default" and path not in DEFAULT_HOMES):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert not found, ("written as literals (use core.vocabulary: JobState, RunState, DEFAULT_NAMESPACE, "
                       "DEFAULT_PROJECT, DEFAULT_SCHEDULER):\n" + "\n".join(found))


# --- `import aiflow_notebook` stays cheap ----------------------------------------------------------------

HEAVY = ("sqlalchemy", "alembic", "zmq", "IPython", "ipywidgets", "graphviz", "cloudpickle", "numpy", "pandas",
         "pyflink", "torch", "tensorflow", "psycopg")
IMPORT_BUDGET_MS = 100
_PROBE = """
import json, sys, time
wall, cpu = time.perf_counter(), time.process_time()
import aiflow_notebook
print(json.dumps({"wall": (time.perf_counter() - wall) * 1000, "cpu": (time.process_time() - cpu) * 1000,
                  "modules": sorted(m.split(".")[0] for m in sys.modules)}))
"""


def test_import_aiflow_notebook_is_fast():
    """A fresh interpreter imports the SDK in <= 100 ms and loads none of the heavy libraries.

    Every job process and every notebook pays this. The figure is the CPU time of the import in a fresh
    interpreter (interpreter start-up excluded), the smallest of nine runs: other processes on a busy machine
    only ever add to a run's time, so the minimum is the least disturbed estimate, while a real regression
    (importing SQLAlchemy eagerly costs ~300 ms) moves every run. The heavy-library check is exact.
    """
    import json
    import os
    import subprocess
    import sys

    runs = [json.loads(subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True,
                                      env=os.environ, timeout=60).stdout) for _ in range(9)]
    loaded = sorted(set(runs[0]["modules"]) & set(HEAVY))
    assert not loaded, f"`import aiflow_notebook` imports {loaded}; import them where they are used"
    cpu = sorted(run["cpu"] for run in runs)
    wall = sorted(run["wall"] for run in runs)
    assert cpu[0] <= IMPORT_BUDGET_MS, (
        f"`import aiflow_notebook` took {cpu[0]:.0f} ms of CPU at best of 9 (median {cpu[4]:.0f} ms, wall "
        f"median {wall[4]:.0f} ms); the budget is {IMPORT_BUDGET_MS} ms: run `python -X importtime -c "
        "'import aiflow_notebook'` to see what got slow")
