/**
 * What the "AI Flow" sidebar shows: pure functions from the state (model.ts) and the widget's own view
 * state (what is selected, the open log) to DOM elements. No fetching, no clicks, no JupyterLab: the
 * widget (sidebar.ts) handles the `data-action` of a clicked element, and the Jest specs render a state
 * directly. Keys, values, names and log text go in as text nodes, never as markup.
 */
import { h } from './dom';
import { statusClass } from './graph';
import {
  byWorkflow,
  FINAL_STATES,
  IBusEvent,
  IJob,
  IModel,
  IModelVersion,
  IRun,
  IState,
  nextStages,
  stageVerb
} from './model';

const RUNS_SHOWN = 5; // runs per workflow
const VERSIONS_SHOWN = 6; // versions per model
const METRICS_SHOWN = 3; // metrics per version
const EVENTS_SHOWN = 20;

/** The job whose log is open. */
export interface ILogTarget {
  run: number;
  job: string;
}

/** What the widget adds to the state: what the user selected and opened, and how it stays current. */
export interface IViewState {
  selectedRun: number | null;
  selectedVersion: { model: string; version: number } | null;
  log: ILogTarget | null;
  logText: string;
  error: string | null;
  /** Bus events arrive live (else the sidebar polls). */
  live: boolean;
}

export function initialViewState(): IViewState {
  return { selectedRun: null, selectedVersion: null, log: null, logText: '', error: null, live: false };
}

/** The sidebar's whole content. */
export function renderSidebar(state: IState, view: IViewState): HTMLElement {
  return h(
    'div',
    { className: 'aiflow-body' },
    renderHeader(view.live),
    view.error ? h('div', { className: 'aiflow-error' }, view.error) : null,
    renderRuns(state, view),
    renderLog(view),
    renderModels(state, view),
    renderEvents(state)
  );
}

function renderHeader(live: boolean): HTMLElement {
  return h(
    'div',
    { className: 'aiflow-header' },
    h('span', { className: 'aiflow-title' }, 'AI Flow'),
    h('span', {
      className: `aiflow-live ${live ? 'aiflow-live-on' : ''}`,
      title: live ? 'live: following the event bus' : 'polling'
    }),
    h('button', { className: 'aiflow-button', 'data-action': 'refresh', title: 'Refresh' }, 'Refresh')
  );
}

// --- runs and jobs -----------------------------------------------------------------------------------

function renderRuns(state: IState, view: IViewState): HTMLElement {
  const groups = byWorkflow(state);
  return h(
    'section',
    { className: 'aiflow-section aiflow-runs' },
    h('h3', {}, 'Workflows and runs'),
    groups.length === 0 ? h('div', { className: 'aiflow-empty' }, 'No runs yet: submit a workflow.') : null,
    groups.map(group =>
      h(
        'div',
        { className: 'aiflow-workflow', 'data-workflow': group.workflow },
        h('div', { className: 'aiflow-workflow-name' }, group.workflow),
        group.runs.slice(0, RUNS_SHOWN).map(run => renderRun(run, view.selectedRun === run.id))
      )
    )
  );
}

function renderRun(run: IRun, selected: boolean): HTMLElement {
  const active = !FINAL_STATES.includes(run.status);
  return h(
    'div',
    {
      className: `aiflow-run${selected ? ' aiflow-selected' : ''}`,
      'data-run-id': run.id,
      'data-status': run.status
    },
    h(
      'div',
      { className: 'aiflow-run-row', 'data-action': 'select-run', 'data-run': run.id },
      h('span', { className: 'aiflow-run-id' }, `run ${run.id}`),
      badge(run.status),
      h(
        'span',
        { className: 'aiflow-actions' },
        active
          ? button('stop', 'Stop', { 'data-run': run.id }, 'Stop this run')
          : button('rerun', 'Re-run', { 'data-run': run.id }, 'Run the same workflow again, as a new run')
      )
    ),
    h(
      'ul',
      { className: 'aiflow-jobs' },
      run.jobs.map(job => renderJob(run, job, active))
    )
  );
}

function renderJob(run: IRun, job: IJob, active: boolean): HTMLElement {
  return h(
    'li',
    {
      className: 'aiflow-job',
      'data-run-id': run.id,
      'data-job': job.name,
      'data-state': job.state,
      'data-history': job.history.join(' '),
      title: job.history.join(' → ')
    },
    h('span', { className: 'aiflow-job-name' }, job.name),
    badge(job.state),
    job.attempt > 0 ? h('span', { className: 'aiflow-attempt' }, `attempt ${job.attempt}`) : null,
    job.serving ? h('span', { className: 'aiflow-serving', title: 'swapped in place (SWAP)' }, `serving ${job.serving}`) : null,
    h(
      'span',
      { className: 'aiflow-actions' },
      button('log', 'Log', { 'data-run': run.id, 'data-job': job.name }, 'Show this job\'s log'),
      active ? button('restart', 'Restart', { 'data-run': run.id, 'data-job': job.name }, 'Restart this job') : null
    ),
    restarted(job.history) ? h('div', { className: 'aiflow-history' }, job.history.join(' → ')) : null
  );
}

/** Whether a job ended and ran again while the page watched (then its states are shown). */
function restarted(history: string[]): boolean {
  return history.some((state, i) => FINAL_STATES.includes(state) && i < history.length - 1);
}

// --- the open log ------------------------------------------------------------------------------------

function renderLog(view: IViewState): HTMLElement | null {
  if (!view.log) {
    return null;
  }
  return h(
    'section',
    { className: 'aiflow-section aiflow-log-section', 'data-log-run': view.log.run, 'data-log-job': view.log.job },
    h('h3', {}, `Log: ${view.log.job} (run ${view.log.run})`, button('close-log', 'Close', {}, 'Close the log')),
    h('pre', { className: 'aiflow-log' }, view.logText)
  );
}

// --- models ------------------------------------------------------------------------------------------

function renderModels(state: IState, view: IViewState): HTMLElement {
  return h(
    'section',
    { className: 'aiflow-section aiflow-models' },
    h('h3', {}, 'Models'),
    state.models.length === 0 ? h('div', { className: 'aiflow-empty' }, 'No models registered.') : null,
    state.models.map(model => renderModel(model, view))
  );
}

function renderModel(model: IModel, view: IViewState): HTMLElement {
  const selected = (v: IModelVersion) =>
    view.selectedVersion?.model === v.model && view.selectedVersion.version === v.version;
  return h(
    'div',
    { className: 'aiflow-model', 'data-model': model.name },
    h('div', { className: 'aiflow-model-name' }, model.name),
    h(
      'ul',
      { className: 'aiflow-versions' },
      model.versions.slice(0, VERSIONS_SHOWN).map(v => renderVersion(v, selected(v)))
    )
  );
}

function renderVersion(v: IModelVersion, selected: boolean): HTMLElement {
  return h(
    'li',
    {
      className: `aiflow-version${selected ? ' aiflow-selected' : ''}`,
      'data-model': v.model,
      'data-version': v.version,
      'data-stage': v.stage,
      'data-action': 'select-version'
    },
    h('span', { className: 'aiflow-version-id' }, `v${v.version}`),
    badge(v.stage),
    v.metrics ? h('span', { className: 'aiflow-metrics' }, metricsText(v.metrics)) : null,
    h(
      'span',
      { className: 'aiflow-actions' },
      nextStages(v.stage).map(stage =>
        button(
          'stage',
          stageVerb(stage),
          { 'data-model': v.model, 'data-version': v.version, 'data-stage': stage },
          `Move v${v.version} to ${stage}`
        )
      )
    )
  );
}

/** The first metrics of a version on one line: `auc=0.8123 loss=0.4`. */
function metricsText(metrics: Record<string, unknown>): string {
  return Object.entries(metrics)
    .slice(0, METRICS_SHOWN)
    .map(([k, value]) => `${k}=${typeof value === 'number' ? +value.toFixed(4) : value}`)
    .join(' ');
}

// --- events ------------------------------------------------------------------------------------------

function renderEvents(state: IState): HTMLElement {
  return h(
    'section',
    { className: 'aiflow-section aiflow-events' },
    h('h3', {}, 'Newest events'),
    state.events.length === 0 ? h('div', { className: 'aiflow-empty' }, 'No events yet.') : null,
    h('ul', { className: 'aiflow-event-list' }, state.events.slice(0, EVENTS_SHOWN).map(renderEvent))
  );
}

function renderEvent(e: IBusEvent): HTMLElement {
  return h(
    'li',
    { className: 'aiflow-event', 'data-version': e.version, 'data-key': e.key, title: `sender ${e.sender ?? '—'}` },
    h(
      'div',
      { className: 'aiflow-event-head' },
      h('span', { className: 'aiflow-event-version' }, `#${e.version}`),
      h('span', { className: 'aiflow-event-type' }, e.event_type)
    ),
    h(
      'div',
      { className: 'aiflow-event-body' },
      h('span', { className: 'aiflow-event-key' }, e.key),
      ' ',
      h('span', { className: 'aiflow-event-value' }, shortValue(e.value))
    )
  );
}

/** An event value for one line: JSON objects (model versions, commands) as `{…}`. */
function shortValue(value: string): string {
  if (value.startsWith('{') || value.startsWith('[')) {
    return value.startsWith('{') ? '{…}' : '[…]';
  }
  return value.length > 40 ? value.slice(0, 40) + '…' : value;
}

function badge(state: string): HTMLElement {
  return h('span', { className: `aiflow-badge ${statusClass(state)}` }, state);
}

function button(action: string, label: string, data: Record<string, string | number>, title: string): HTMLElement {
  return h('button', { className: 'aiflow-button', 'data-action': action, title, ...data }, label);
}
