"""The panels that follow one workflow run: ``GraphWidget`` (the split graph coloured by job status) and
``RunPanel`` (each job's state, attempts, duration, progress and log tail, with stop / restart / re-run)."""

from __future__ import annotations

import copy
import html
from typing import Any

import ipywidgets as widgets
import traitlets

from aiflow_notebook.core.vocabulary import FINAL_STATES, JobState, RunState
from aiflow_notebook.widgets.base import Panel, svg_body, table
from aiflow_notebook.widgets.run_state import RunTracker


class _RunFollower(Panel):
    """A panel that follows run ``run`` (a ``WorkflowRun``); its state is in ``run_status`` and ``jobs``."""

    workflow = traitlets.Unicode("").tag(sync=True)
    run_id = traitlets.Int(0).tag(sync=True)
    run_status = traitlets.Unicode(RunState.RUNNING.value).tag(sync=True)
    jobs = traitlets.Dict().tag(sync=True)  # job -> {state, attempt, attempts, duration_s, progress, log_tail...}

    def __init__(self, run: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self._build()
        self.follow_run(run)

    @property
    def run(self) -> Any:
        """The ``WorkflowRun`` followed."""
        return self._tracker.run

    def follow_run(self, run: Any) -> None:
        """Follow ``run`` from now on (the re-run button uses it with the new run)."""
        self._unfollow()
        with self._lock:
            self._tracker = tracker = RunTracker(run)
            seen = run.since_version
            for event in run.client.list_events(key=tracker.keys, since_version=seen):  # shown right at once
                tracker.apply(event)
                seen = event.version
            tracker.refresh_logs()
            with self.hold_sync():
                self.workflow, self.run_id = run.workflow.name, run.run_id
                self._publish()
        self._follow(tracker.keys, seen, tick=True)

    def _apply(self, batch: list) -> None:
        changed = [self._tracker.apply(event) for event in batch]
        if any(changed):
            self._publish()

    def _tick(self) -> None:
        live = any(info["state"] not in FINAL_STATES and info["job_run"] for info in self._tracker.jobs.values())
        self._tracker.refresh_durations()
        if self._tracker.refresh_logs() or live:
            self._publish()
        if self._tracker.status in FINAL_STATES and not live and self._follower is not None:
            self._follower.stop()  # the run is over and its logs are read: nothing more will change

    def _publish(self) -> None:
        self.run_status = self._tracker.status
        self.jobs = copy.deepcopy(self._tracker.jobs)
        self._render()

    def _build(self) -> None:
        """Create the child widgets."""

    def _render(self) -> None:
        """Show the traits in the child widgets."""

    def _title(self) -> str:
        return f"run {self.run_id} of {self.workflow}: {self.run_status}"

    def _fallback_text(self) -> str:
        lines = [self._title()]
        for job, info in self.jobs.items():
            lines.append(f"  {job}: {info['state']}{_facts(info)}")
        return "\n".join(lines)


class GraphWidget(_RunFollower):
    """The split graph of a run, each job coloured by its live status; pick a job (``selected``) to see
    its state, attempts, duration and log tail."""

    selected = traitlets.Unicode("").tag(sync=True)

    def _build(self) -> None:
        self._picture = widgets.HTML()
        self._picker = widgets.ToggleButtons(options=[], description="job", style={"button_width": "auto"})
        self._details = widgets.HTML()
        self._drawn: tuple | None = None
        self.children = [self._picture, self._picker, self._details]
        self._picker.observe(lambda change: setattr(self, "selected", change["new"] or ""), "value")
        self.observe(lambda change: self._render_details(), "selected")

    def follow_run(self, run: Any) -> None:
        self._picker.options = list(run.workflow.jobs)
        self._picker.value = None
        super().follow_run(run)

    def _render(self) -> None:
        states = tuple((job, info["state"]) for job, info in self.jobs.items())
        if states != self._drawn:  # dot only when a colour changes
            from aiflow_notebook.core.rendering import render_svg

            graph = self.run.workflow.to_graphviz(status=dict(states))
            self._picture.value = f"<div style='overflow:auto'>{svg_body(render_svg(graph))}</div>"
            self._drawn = states
        self._render_details()

    def _render_details(self) -> None:
        with self._lock:
            info = self.jobs.get(self.selected)
            if info is None:
                self._details.value = f"<small>{html.escape(self._title())} — pick a job to see its details</small>"
                return
            rows = [["state", info["state"]], ["attempts", info["attempts"]],
                    ["duration", _seconds(info["duration_s"])]]
            if info["progress"] is not None:
                rows.append(["progress", f"{info['progress']:.0%}"])
            if info["error"]:
                rows.append(["error", info["error"].splitlines()[-1][:300]])
            if info.get("serving"):
                rows.append(["serving", info["serving"]])
            self._details.value = (f"<b>{html.escape(self.selected)}</b>" + table(["", ""], rows)
                                   + _log_html(info["log_tail"]))

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The widget, plus the run's drawing (SVG, PNG, workflow JSON) and text for other viewers."""
        with self._lock:
            status = {job: info["state"] for job, info in self.jobs.items()}
            drawing = self.run.workflow.view(status=status, run_id=self.run_id, run_status=self.run_status)
        return {**drawing._repr_mimebundle_(), **super()._repr_mimebundle_(**kwargs)}

    def _fallback_html(self) -> str:
        return self._picture.value + f"<pre>{html.escape(self._fallback_text())}</pre>"


class RunPanel(_RunFollower):
    """Each job run's state, attempt, duration, a progress bar where the job reports progress, and the
    log tail while it runs; buttons stop the run, restart a job, or submit the workflow again."""

    message = traitlets.Unicode("").tag(sync=True)  # what the last button did

    def _build(self) -> None:
        self._header = widgets.HTML()
        self._rows = widgets.VBox()
        self._row_widgets: dict[str, tuple[widgets.HTML, widgets.FloatProgress, widgets.HTML]] = {}
        self.stop_button = widgets.Button(description="Stop run", icon="stop", button_style="danger")
        self.restart_picker = widgets.Dropdown(options=[], description="job", layout=widgets.Layout(width="220px"))
        self.restart_button = widgets.Button(description="Restart job", icon="refresh")
        self.rerun_button = widgets.Button(description="Re-run", icon="play")
        self._message = widgets.HTML()
        self.stop_button.on_click(lambda _: self._act(self.stop))
        self.restart_button.on_click(lambda _: self._act(lambda: self.restart(self.restart_picker.value)))
        self.rerun_button.on_click(lambda _: self._act(self.rerun))
        self.children = [self._header, self._rows,
                         widgets.HBox([self.stop_button, self.restart_picker, self.restart_button, self.rerun_button]),
                         self._message]

    def follow_run(self, run: Any) -> None:
        self._row_widgets = {}
        for job in run.workflow.jobs:
            bar = widgets.FloatProgress(min=0, max=1, layout=widgets.Layout(width="200px", display="none"))
            self._row_widgets[job] = (widgets.HTML(), bar, widgets.HTML())
        self._rows.children = [widgets.VBox([widgets.HBox([line, bar]), log])
                               for line, bar, log in self._row_widgets.values()]
        self.restart_picker.options = list(run.workflow.jobs)
        restartable = hasattr(run, "restart_job")
        self.restart_button.disabled = not restartable
        self.restart_button.tooltip = "" if restartable else "this scheduler cannot restart one job yet"
        super().follow_run(run)

    # -- the buttons (callbacks may run while a cell is busy: only the run's own client is used) ------------

    def stop(self) -> str:
        """Ask the scheduler to stop the run (returns at once; the panel shows the jobs end)."""
        self.run.request_stop()
        return f"stop of run {self.run_id} requested"

    def restart(self, job: str) -> str:
        """Restart one job of the run (where the scheduler supports it)."""
        if not hasattr(self.run, "restart_job"):
            raise RuntimeError("this scheduler cannot restart one job yet; stop the run and re-run it")
        self.run.restart_job(job)
        return f"restart of job {job!r} requested"

    def rerun(self) -> str:
        """Submit the same workflow again and follow the new run."""
        from aiflow_notebook.session.submit import submit

        old = self.run_id
        self.follow_run(submit(self.run.workflow))
        return f"submitted {self.workflow!r} again: run {self.run_id} (was run {old})"

    def _act(self, action) -> None:
        try:
            self.message = action()
        except Exception as err:  # noqa: BLE001 - shown in the panel: a callback's traceback goes nowhere
            self.message = f"failed: {err}"
        self._message.value = f"<small>{html.escape(self.message)}</small>"

    def _render(self) -> None:
        self._header.value = f"<b>{html.escape(self._title())}</b>"
        for job, info in self.jobs.items():
            line, bar, log = self._row_widgets[job]
            line.value = (f"<span style='display:inline-block;min-width:140px'><b>{html.escape(job)}</b></span> "
                          f"{html.escape(info['state'])}{html.escape(_facts(info))}")
            if info["progress"] is not None:
                bar.value, bar.layout.display = info["progress"], None
            log.value = _log_html(info["log_tail"]) if info["state"] != JobState.INIT else ""
        self.stop_button.disabled = self.run_status in FINAL_STATES

    def _fallback_html(self) -> str:
        rows = [[job, info["state"], info["attempts"], _seconds(info["duration_s"]),
                 "" if info["progress"] is None else f"{info['progress']:.0%}"] for job, info in self.jobs.items()]
        return f"<b>{html.escape(self._title())}</b>" + table(["job", "state", "attempts", "duration", "progress"], rows)


def _facts(info: dict[str, Any]) -> str:
    facts = []
    if info["attempts"]:
        facts.append(f"attempt {info['attempts']}")
    if info["duration_s"] is not None:
        facts.append(_seconds(info["duration_s"]))
    if info["progress"] is not None:
        facts.append(f"{info['progress']:.0%}")
    if info.get("serving"):
        facts.append(f"serving {info['serving']}")
    if info.get("swap_error"):
        facts.append(f"swap to {info['swap_error']} failed")
    return f" ({', '.join(facts)})" if facts else ""


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f} s"


def _log_html(tail: str) -> str:
    if not tail:
        return ""
    return ("<pre style='max-height:12em;overflow:auto;font-size:11px;margin:2px 0;background:#f6f8fa'>"
            f"{html.escape(tail)}</pre>")
