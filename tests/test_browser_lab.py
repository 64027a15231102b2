"""The JupyterLab extension in a real browser: headless Debian Chromium (playwright) against a real
`jupyter lab` with the server extension, a kernel, the embedded scheduler and real job processes.

One scenario, one JupyterLab: open the scenario notebook and run all; the interactive graph renders and
its batch jobs turn FINISHED live; the sidebar lists the run and its jobs; "Validate" on a model version
restarts the streaming job (RUNNING → KILLED → RUNNING in the sidebar); the job's log opens; "Stop"
ends the run and a notification says so. Screenshots of each view go to tests/artifacts/ (always); on a
failure the page's console log too. Nothing of ours is left running afterwards.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
from browser_scenario import MODEL, WORKFLOW, write_scenario

from aiflow_notebook.testing.browser import JupyterLab, chromium_version, launch_chromium
from aiflow_notebook.testing.processes import wait_no_process_left

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"
NOTEBOOK = "scenario.ipynb"
PANELS_NOTEBOOK = "03_live_panels.ipynb"
T = 120_000  # ms: one step of the scenario (kernel start, a job process, a restart) on a loaded machine

# Records every state the serve job shows in the sidebar, in order (the DOM is redrawn on each change).
WATCH_STATES = """(job) => {
  window.__aiflowStates = [];
  const read = () => {
    const el = document.querySelector(`#aiflow-sidebar li.aiflow-job[data-job="${job}"]`);
    const state = el && el.getAttribute('data-state');
    const seen = window.__aiflowStates;
    if (state && seen[seen.length - 1] !== state) seen.push(state);
  };
  new MutationObserver(read).observe(document.querySelector('#aiflow-sidebar'),
                                     {subtree: true, childList: true, attributes: true});
  read();
}"""


@pytest.fixture
def lab(tmp_path, aiflow_home):
    print(chromium_version())
    root = tmp_path / "root"
    root.mkdir()
    write_scenario(root / NOTEBOOK)
    shutil.copy(REPO / "notebooks" / PANELS_NOTEBOOK, root / PANELS_NOTEBOOK)
    config = tmp_path / "jupyter-config" / "labconfig"
    config.mkdir(parents=True)
    # no "get Jupyter news?" toast over the screenshots
    (config / "page_config.json").write_text('{"disabledExtensions": '
                                              '{"@jupyterlab/apputils-extension:announcements": true}}')
    server = JupyterLab(root, aiflow_home).start()
    try:
        yield server
    finally:
        server.stop()
        assert wait_no_process_left(home=aiflow_home, timeout=30) == [], "a jupyter, kernel or job process is left"


@pytest.fixture
def page(lab):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 950})
            page.console_lines = []
            page.on("console", lambda m: page.console_lines.append(f"[{m.type}] {m.text}"))
            page.on("pageerror", lambda e: page.console_lines.append(f"[pageerror] {e}"))
            page.set_default_timeout(T)
            yield page
        finally:
            browser.close()
    assert wait_no_process_left(cmdline="chromium", timeout=20) == [], "a chromium process is left"


@contextmanager
def failure_artifacts(page, lab, name: str):
    """On a failure: the page's screenshot, its console log and the server's log under tests/artifacts/."""
    try:
        yield
    except BaseException:
        page.screenshot(path=str(ARTIFACTS / f"{name}-failure.png"))
        (ARTIFACTS / f"{name}-console.log").write_text("\n".join(page.console_lines))
        (ARTIFACTS / f"{name}-jupyter.log").write_text(lab.log())
        raise


def open_and_run_all(lab, page, notebook: str) -> None:
    lab.start_kernel_for(notebook)
    page.goto(lab.url(f"lab/tree/{notebook}"))
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=T)
    page.wait_for_selector(".jp-StatusBar-TextItem:has-text('| Idle')", timeout=T)  # connected, idle
    page.click(".jp-SideBar li[data-id='filebrowser']")  # fold the file browser: room for the notebook
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()


def widen_left_panel(page, pixels: int) -> None:
    """Drag the handle between the left panel and the main area, as a user widens the sidebar."""
    handle = page.locator("#jp-main-split-panel > .lm-SplitPanel-handle").first
    box = handle.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + pixels, y, steps=5)
    page.mouse.up()


def shot(page, name: str, selector: str | None = None) -> None:
    target = page.locator(selector) if selector else page
    target.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def test_run_all_then_watch_validate_restart_log_and_stop_in_the_sidebar(lab, page):
    with failure_artifacts(page, lab, "browser_lab"):
        # Run all: the interactive graph (our MIME renderer) renders and its batch jobs turn FINISHED live.
        open_and_run_all(lab, page, NOTEBOOK)
        graph = ".jp-OutputArea .aiflow-workflow-renderer"
        page.wait_for_selector(f"{graph} .aiflow-job-box[data-job='serve']")
        for job in ("prep", "train"):
            page.wait_for_selector(f"{graph} .aiflow-job-box[data-job='{job}'][data-state='FINISHED']")
        page.wait_for_selector(f"{graph} .aiflow-job-box[data-job='serve'][data-state='RUNNING']")
        assert page.locator(".jp-OutputArea-output img, .jp-OutputArea-output .jp-RenderedSVG").count() == 0, \
            "the SVG fallback was shown instead of the interactive graph"
        page.click(f"{graph} .aiflow-job-box[data-job='train']")  # click a job → its details
        details = page.wait_for_selector(f"{graph} .aiflow-job-details[data-details-for='train']")
        page.wait_for_selector(f"{graph} .aiflow-run-details table")  # attempts from the REST API
        assert "FINISHED" in details.inner_text()
        shot(page, "notebook_graph", graph)
        # %aiflow magic lines are coloured in the editor
        page.wait_for_selector(".jp-Cell .cm-content .aiflow-magic:has-text('%aiflow')", state="attached")
        page.wait_for_selector(".jp-Cell .cm-content .aiflow-magic-command:has-text('status')", state="attached")

        # The sidebar lists the run and its jobs, live.
        page.click(".jp-SideBar li[data-id='aiflow-sidebar']")
        widen_left_panel(page, 110)
        sidebar = "#aiflow-sidebar"
        run = page.wait_for_selector(f"{sidebar} .aiflow-workflow[data-workflow='{WORKFLOW}'] .aiflow-run[data-run-id]")
        run_id = run.get_attribute("data-run-id")
        jobs = f"{sidebar} .aiflow-run[data-run-id='{run_id}'] li.aiflow-job"
        for job, state in (("prep", "FINISHED"), ("train", "FINISHED"), ("serve", "RUNNING")):
            page.wait_for_selector(f"{jobs}[data-job='{job}'][data-state='{state}']")
        version = page.wait_for_selector(f"{sidebar} li.aiflow-version[data-model='{MODEL}'][data-version='1']")
        assert version.get_attribute("data-stage") == "GENERATED"
        shot(page, "sidebar_run", sidebar)

        # "Validate" on the version: the model center publishes MODEL_VALIDATED and the scheduler restarts serve.
        page.evaluate(WATCH_STATES, "serve")
        page.click(f"{sidebar} li.aiflow-version[data-version='1'] button[data-stage='VALIDATED']")
        page.wait_for_selector(f"{sidebar} li.aiflow-version[data-version='1'][data-stage='VALIDATED']")
        # The job's row shows the states it passed through (a KILLED → STARTING → RUNNING burst can land
        # in one animation frame, so the row's own state may never rest on KILLED).
        serve_row = f"{jobs}[data-job='serve']"
        page.wait_for_function("""(sel) => {
            const el = document.querySelector(sel);
            return !!el && /RUNNING.* KILLED .*RUNNING$/.test(el.getAttribute('data-history'));
        }""", arg=serve_row, timeout=T)
        assert "RUNNING → KILLED → STARTING → RUNNING" in page.inner_text(f"{serve_row} .aiflow-history")
        seen = page.evaluate("window.__aiflowStates")  # what the row's state showed, in order
        assert seen[0] == "RUNNING" and seen[-1] == "RUNNING", seen
        page.wait_for_selector(f"{jobs}[data-job='serve'] .aiflow-attempt")  # a new attempt
        shot(page, "sidebar_restart", sidebar)

        # The serve job's log.
        page.click(f"{jobs}[data-job='serve'] button[data-action='log']")
        log = page.wait_for_selector(f"{sidebar} .aiflow-log-section[data-log-job='serve'] pre:has-text('serving')")
        assert "serve: serving the newest validated model" in log.inner_text()
        shot(page, "sidebar_log", sidebar)

        # The palette's "open lineage" on the selected version opens its lineage graph in the main area.
        page.click(f"{sidebar} li.aiflow-version[data-version='1'] .aiflow-version-id")
        page.keyboard.press("Control+Shift+C")
        page.fill(".lm-CommandPalette-input", "AI Flow: Open Lineage")
        page.keyboard.press("Enter")
        lineage = page.wait_for_selector(f".jp-MainAreaWidget#aiflow-lineage-{MODEL}-1 .aiflow-graph")
        assert "model_version" in lineage.inner_text(), lineage.inner_text()
        shot(page, "lineage", f".jp-MainAreaWidget#aiflow-lineage-{MODEL}-1")

        # Stop the run from the sidebar: it ends KILLED and a notification says so.
        page.click(f"{sidebar} .aiflow-run[data-run-id='{run_id}'] button[data-action='stop']")
        page.wait_for_selector(f"{sidebar} .aiflow-run[data-run-id='{run_id}'][data-status='KILLED']")
        page.wait_for_selector(f".Toastify__toast:has-text('Run {run_id} of {WORKFLOW} killed')")
        page.wait_for_selector(f"{graph} .aiflow-job-box[data-job='serve'][data-state='KILLED']", state="attached")
        page.wait_for_timeout(1000)  # let the notification finish sliding in before the picture
        shot(page, "lab_overview")

        # Re-run the ended run from the sidebar: a new run of the same workflow appears and runs; stop it.
        page.click(f"{sidebar} .aiflow-run[data-run-id='{run_id}'] button[data-action='rerun']")
        rerun = page.wait_for_selector(f"{sidebar} .aiflow-run:not([data-run-id='{run_id}'])[data-status='RUNNING']")
        new_id = int(rerun.get_attribute("data-run-id"))
        assert new_id > int(run_id)
        page.click(f"{sidebar} .aiflow-run[data-run-id='{new_id}'] button[data-action='stop']")
        page.wait_for_selector(f"{sidebar} .aiflow-run[data-run-id='{new_id}'][data-status='KILLED']")


def test_live_panels_notebook_with_the_sidebar(lab, page):
    """notebooks/03_live_panels.ipynb (the notebook panels' demo) run all in JupyterLab, watched from the
    sidebar: its run and jobs live, "Validate" on the version it leaves GENERATED restarts serve once more,
    serve's log, "Stop"."""
    with failure_artifacts(page, lab, "browser_panels"):
        open_and_run_all(lab, page, PANELS_NOTEBOOK)
        page.wait_for_selector(".jp-OutputArea-output:has-text('click its Validate button above')", timeout=240_000)
        page.wait_for_selector(".jp-OutputArea-output:has-text('serve keeps running')", timeout=T)
        # The run's graph (the panels' GraphWidget) is drawn; picking a job shows it FINISHED.
        graph = page.locator(".jp-OutputArea-output:has(.widget-toggle-buttons)").first
        assert "serve" in graph.locator("svg").first.text_content()
        for job in ("prep", "train"):
            graph.locator(".widget-toggle-button", has_text=job).first.click()
            page.wait_for_function("""([el, job]) => el.innerText.includes(job) && /state\\s*FINISHED/.test(el.innerText)""",
                                   arg=[graph.element_handle(), job], timeout=T)
        shot(page, "panels_graph_widget", ".jp-OutputArea-output:has(.widget-toggle-buttons)")

        page.click(".jp-SideBar li[data-id='aiflow-sidebar']")
        widen_left_panel(page, 110)
        sidebar = "#aiflow-sidebar"
        run = page.wait_for_selector(f"{sidebar} .aiflow-workflow[data-workflow='demo/live_demo'] .aiflow-run")
        jobs = f"{sidebar} .aiflow-run[data-run-id='{run.get_attribute('data-run-id')}'] li.aiflow-job"
        for job, state in (("prep", "FINISHED"), ("train", "FINISHED"), ("serve", "RUNNING")):
            page.wait_for_selector(f"{jobs}[data-job='{job}'][data-state='{state}']")
        serve = f"{jobs}[data-job='serve']"
        killed_before = page.get_attribute(serve, "data-history").split().count("KILLED")
        shot(page, "panels_sidebar_run", sidebar)

        page.click(f"{sidebar} li.aiflow-version[data-model='ctr'][data-version='2'] button[data-stage='VALIDATED']")
        page.wait_for_function("""([sel, before]) => {
            const el = document.querySelector(sel);
            const h = el ? el.getAttribute('data-history').split(' ') : [];
            return h.filter(s => s === 'KILLED').length > before && h[h.length - 1] === 'RUNNING';
        }""", arg=[serve, killed_before], timeout=T)
        page.click(f"{serve} button[data-action='log']")
        page.wait_for_selector(f"{sidebar} .aiflow-log-section[data-log-job='serve'] pre:has-text('serving ctr')")
        shot(page, "panels_sidebar_restart", sidebar)
        shot(page, "panels_overview")

        page.click(f"{sidebar} .aiflow-run button[data-action='stop']")
        page.wait_for_selector(".Toastify__toast:has-text('of demo/live_demo killed'), "
                               ".Toastify__toast:has-text('of live_demo killed')")
