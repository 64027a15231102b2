"""``af.evaluate`` and ``af.model_validate`` on the python engine: measure a model version, then gate it.

An ``evaluate`` node with a model loads the version under evaluation and calls
``evaluator(model_object, *inputs)``; a dict it returns (``{"auc": 0.81}``) is merged into that version's
metrics in the model center. A ``model_validate`` node calls ``validator(version, *inputs)`` with the
version (its ``.metrics`` hold what the evaluation recorded) and acts on the verdict:

- ``True`` (or ``(True, reason)``): the version becomes VALIDATED, which publishes ``MODEL_VALIDATED``
  (the event a serving job restarts on);
- ``False`` (or ``(False, reason)``): it stays GENERATED, and the reason is recorded in its metrics
  under ``"validation"``, so the model panel and ``af.list_model_versions`` say why.

The version is the one ``version=`` names, else the one the ``MODEL_*`` event that started the job names,
else the newest GENERATED version (the one waiting for its gate), else the newest version. A validator
can be :func:`metric_at_least`.
"""

from __future__ import annotations

from typing import Any

from aiflow_notebook.core.vocabulary import Stage
from aiflow_notebook.engines.model_io import ModelSelectionError, load_model, triggering_version

VALIDATION_METRIC = "validation"


def evaluate_version(node: Any, evaluator: Any, inputs: list[Any]) -> Any:
    """Run an ``evaluate`` node (``node`` is its ``job_runtime.NodeContext``); returns what the evaluator did."""
    store, version = _review(node, evaluator, "evaluator=fn(model, *inputs) returning a dict of metrics")
    metrics = evaluator(load_model(version.uri), *inputs)
    if isinstance(metrics, dict):
        store.update_model_version(node.model, version.version, metrics=metrics)
    print(f"[aiflow] {node.node}: model {node.model} version {version.version} evaluated: {metrics}", flush=True)
    return metrics


def validate_version(node: Any, validator: Any, inputs: list[Any]) -> bool:
    """Run a ``model_validate`` node: VALIDATED on a passing verdict, else GENERATED with the reason."""
    store, version = _review(node, validator, "validator=fn(version, *inputs) returning True/False or (bool, reason)")
    verdict = validator(version, *inputs)
    passed, reason = verdict if isinstance(verdict, tuple) else (verdict, None)
    passed = bool(passed)
    reason = str(reason) if reason else ("passed" if passed else "rejected by the validator")
    if passed:
        store.update_model_version(node.model, version.version, Stage.VALIDATED, metrics={VALIDATION_METRIC: reason})
    else:
        store.update_model_version(node.model, version.version, metrics={VALIDATION_METRIC: reason})
    print(f"[aiflow] {node.node}: model {node.model} version {version.version} "
          f"{Stage.VALIDATED if passed else 'stays ' + version.stage}: {reason}", flush=True)
    return passed


def _review(node: Any, fn: Any, needs: str) -> tuple[Any, Any]:
    """The store and the version an evaluate or model_validate ``node`` works on; ``fn``, the user's function,
    must be given (``needs`` says what it is)."""
    from aiflow_notebook.meta import default_store

    if fn is None:
        raise ModelSelectionError(f"{node.kind} node {node.node!r} of model {node.model!r} needs {needs}")
    store = default_store()
    return store, version_under_review(store, node.model, node.model_version, node.trigger)


def metric_at_least(name: str, threshold: float):
    """A validator: passes when the version's metric ``name`` is at least ``threshold``, saying so."""

    def validator(version: Any, *_inputs: Any) -> tuple[bool, str]:
        value = (version.metrics or {}).get(name)
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False, f"no {name} metric recorded (evaluate the version first)"
        if value >= threshold:
            return True, f"{name} {value:.4f} >= {threshold}"
        return False, f"{name} {value:.4f} < {threshold}"

    validator.__name__ = f"{name}_at_least_{threshold}"
    return validator


def version_under_review(store: Any, model: str, version: int | str | None, trigger: dict[str, Any] | None) -> Any:
    """The version an evaluate/validate node works on (see the module's docstring)."""
    from aiflow_notebook.meta.errors import UnknownModelError

    try:
        versions = store.list_model_versions(model)
    except UnknownModelError:
        versions = []
    by_number = {v.version: v for v in versions}
    for number in (version, triggering_version(trigger, model)):
        if number is not None:
            if int(number) not in by_number:
                raise ModelSelectionError(f"model {model!r} has no version {number} to review "
                                          f"(versions: {sorted(by_number) or 'none'})")
            return by_number[int(number)]
    generated = [v for v in versions if v.stage == Stage.GENERATED]
    live = [v for v in versions if v.stage != Stage.DELETED]
    if generated or live:
        return (generated or live)[-1]
    raise ModelSelectionError(f"model {model!r} has no version to review; train one first")
