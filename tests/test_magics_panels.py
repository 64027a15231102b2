"""%aiflow events / models / lineage / status show the live panels; bad lines get one paragraph."""

from __future__ import annotations

import pytest
from sdk_support import run

import aiflow_notebook as af
from aiflow_notebook.widgets import live_threads

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def widgets_in(result) -> list[dict]:
    return [o for o in result.outputs if WIDGET_VIEW in o]


def test_events_and_models_open_live_panels(shell):
    result = run(shell, "%aiflow events --key ctr --type MODEL_GENERATED --limit 5")
    assert result.success and not result.stderr, result.stderr
    (panel,) = widgets_in(result)
    assert "key ctr, type MODEL_GENERATED" in panel["text/plain"]
    af.register_model("ctr")
    af.register_model_version("ctr", uri="file:///m")  # the panel started the bus: this is published on it
    models = run(shell, "%aiflow models ctr")
    assert models.success and not models.stderr, models.stderr
    assert "ctr v1: GENERATED" in widgets_in(models)[0]["text/plain"]
    every = run(shell, "%aiflow models")
    assert "ctr v1: GENERATED" in widgets_in(every)[0]["text/plain"]
    lineage = run(shell, "%aiflow lineage ctr:1")
    assert lineage.success and not lineage.stderr and widgets_in(lineage)
    assert len(live_threads()) >= 6  # events, models x2, lineage: a listener and a painter each


@pytest.mark.parametrize("line, problem", [
    ("%aiflow events --limit 0", "--limit must be at least 1, got 0"),
    ("%aiflow events --limit many", "argument --limit: invalid int value"),
    ("%aiflow events --colour red", "unrecognized arguments: --colour red"),
    ("%aiflow models ghost", "model 'ghost' is not registered"),
    ("%aiflow models a b", "unrecognized arguments: b"),
    ("%aiflow lineage ctr:latest", "the version after 'ctr:' must be a number, got 'latest'"),
    ("%aiflow lineage ghost:1", "model 'ghost' is not registered"),
    ("%aiflow status 42", "no run 42 was submitted in this session"),
    ("%aiflow status", "no run of any workflow was submitted in this session"),
])
def test_bad_panel_lines_print_one_paragraph(shell, line, problem):
    result = run(shell, line)
    assert result.success and "Traceback" not in result.stderr, result.stderr
    assert problem in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("aiflow: ") and not widgets_in(result)


def test_help_lists_the_panel_commands(shell):
    text = run(shell, "%aiflow help").stdout
    assert "Open the live event panel" in text and "Validate / Deploy / Deprecate" in text
    assert "not available" not in run(shell, "%aiflow events").stderr
