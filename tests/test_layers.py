"""The layering of DESIGN §3, checked on the source: one definition of each shared word, imports downward.

These read the code with ``ast`` (no import needed), so they hold for every module, also ones no other
test happens to import.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("aiflow_notebook", "kernel_magics")
VOCABULARY = ROOT / "aiflow_notebook" / "vocabulary.py"

# Words that vocabulary.py defines; a string literal equal to one of them anywhere else is a second definition.
SHARED_WORDS = {"JOB_STATUS_CHANGED", "WORKFLOW_RUN_STATUS_CHANGED", "DATASET_UPDATED", "MODEL_GENERATED",
                "MODEL_VALIDATED", "MODEL_DEPLOYED", "MODEL_DEPRECATED", "MODEL_DELETED"}
FINAL = {"FINISHED", "FAILED", "KILLED"}


def _modules(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py")
                  if "migrations" not in p.parts)


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_shared_words_are_defined_only_in_vocabulary():
    """Event type names, the set of final states and the wildcard appear as literals in one module only."""
    found = []
    for path in _modules(*PACKAGES):
        if path == VOCABULARY:
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
    assert not found, "defined outside aiflow_notebook/vocabulary.py:\n" + "\n".join(found)
