/**
 * The sidebar's state and how REST answers and bus events change it.
 *
 * Pure functions only (no DOM, no JupyterLab): the Jest specs drive them directly. REST answers are
 * normalised here, so the widgets never depend on the exact field names the server extension uses.
 */

// --- vocabulary: the words of aiflow_notebook/core/vocabulary.py and meta/models.py, written once for the
// page (tests/test_labextension.py checks this block against the Python and that no other file spells them)

/** The values of a JOB_STATUS_CHANGED event, in the order a job passes through them. */
export const JobState = {
  INIT: 'INIT',
  STARTING: 'STARTING',
  RUNNING: 'RUNNING',
  FINISHED: 'FINISHED',
  FAILED: 'FAILED',
  KILLED: 'KILLED'
} as const;

/** The values of a WORKFLOW_RUN_STATUS_CHANGED event: a run is running, then final. */
export const RunState = {
  RUNNING: 'RUNNING',
  FINISHED: 'FINISHED',
  FAILED: 'FAILED',
  KILLED: 'KILLED'
} as const;

/** Final states of a job run and of a workflow run: nothing follows them. */
export const FINAL_STATES: readonly string[] = [JobState.FINISHED, JobState.FAILED, JobState.KILLED];

export const JOB_STATUS_CHANGED = 'JOB_STATUS_CHANGED';
export const RUN_STATUS_CHANGED = 'WORKFLOW_RUN_STATUS_CHANGED';
/** A model version entering a stage publishes `MODEL_<STAGE>` (key the model's name). */
export const MODEL_EVENT_PREFIX = 'MODEL_';
/** A running job serves a new model version on every instance (action SWAP; key `<workflow>.<job>`). */
export const MODEL_SWAPPED = 'MODEL_SWAPPED';

/** The namespace of an event that names none. */
export const DEFAULT_NAMESPACE = 'default';
/** The project of a workflow that names none. */
export const DEFAULT_PROJECT = 'default';

/** Lifecycle stages of a model version. */
export const Stage = {
  GENERATED: 'GENERATED',
  VALIDATED: 'VALIDATED',
  DEPLOYED: 'DEPLOYED',
  DEPRECATED: 'DEPRECATED',
  DELETED: 'DELETED'
} as const;

/** The stages the sidebar offers a version: meta/models.py's ALLOWED_TRANSITIONS but DELETED, in stage order. */
export const NEXT_STAGES: Readonly<Record<string, readonly string[]>> = {
  [Stage.GENERATED]: [Stage.VALIDATED, Stage.DEPLOYED, Stage.DEPRECATED],
  [Stage.VALIDATED]: [Stage.DEPLOYED, Stage.DEPRECATED],
  [Stage.DEPLOYED]: [Stage.DEPRECATED],
  [Stage.DEPRECATED]: [Stage.DEPLOYED],
  [Stage.DELETED]: []
};

// --- end of the vocabulary

export const MAX_EVENTS = 50;
const HISTORY = 8;

/** One event as the push channel and `GET events` deliver it. */
export interface IBusEvent {
  version: number;
  key: string;
  value: string;
  event_type: string;
  namespace: string;
  sender: string | null;
  create_time: number | string | null;
  run_id: number | null;
}

export interface IJob {
  name: string;
  state: string;
  attempt: number;
  startedAt: string | null;
  endedAt: string | null;
  error: string | null;
  /** Bus version of the newest status event applied (0: state came from REST). */
  version: number;
  /** The states this job passed through, oldest first (the last few). */
  history: string[];
  /** The model version a running job switched to in place (`ctr v2`), or null. */
  serving: string | null;
}

export interface IRun {
  id: number;
  workflow: string;
  project: string;
  status: string;
  createdAt: string | null;
  jobs: IJob[];
  /** True once `GET runs/<id>` answered (jobs are known). */
  loaded: boolean;
}

export interface IModelVersion {
  model: string;
  version: number;
  stage: string;
  uri: string;
  metrics: Record<string, unknown> | null;
}

export interface IModel {
  name: string;
  versions: IModelVersion[];
}

export interface IState {
  runs: IRun[]; // newest first
  events: IBusEvent[]; // newest first
  models: IModel[];
  lastVersion: number;
}

/** A run whose end was seen live: the sidebar raises a notification for it. */
export interface IRunEnded {
  id: number;
  workflow: string;
  status: string;
}

export type Action =
  | { type: 'runs'; runs: unknown }
  | { type: 'run'; run: unknown; asOfVersion: number }
  | { type: 'events'; events: unknown }
  | { type: 'event'; event: IBusEvent }
  | { type: 'models'; models: unknown }
  | { type: 'versions'; model: string; versions: unknown };

export function initialState(): IState {
  return { runs: [], events: [], models: [], lastVersion: 0 };
}

/** The next state; never mutates `state`. */
export function reduce(state: IState, action: Action): IState {
  switch (action.type) {
    case 'runs':
      return mergeRuns(state, listOf(action.runs, 'runs').map(normaliseRun));
    case 'run':
      return applyRunDetail(state, normaliseRun(action.run), action.asOfVersion);
    case 'events': {
      let next = state;
      const events = listOf(action.events, 'events').map(normaliseEvent);
      events.sort((a, b) => a.version - b.version);
      for (const event of events) {
        next = applyEvent(next, event);
      }
      return next;
    }
    case 'event':
      return applyEvent(state, normaliseEvent(action.event));
    case 'models':
      return mergeModels(state, listOf(action.models, 'models'));
    case 'versions':
      return applyVersions(state, action.model, listOf(action.versions, 'versions'));
  }
}

/** Runs that ended between `prev` and `next` (RUNNING before, final now). */
export function endedRuns(prev: IState, next: IState): IRunEnded[] {
  const before = new Map(prev.runs.map(r => [r.id, r.status]));
  return next.runs
    .filter(r => FINAL_STATES.includes(r.status))
    .filter(r => before.has(r.id) && !FINAL_STATES.includes(before.get(r.id)!))
    .map(r => ({ id: r.id, workflow: r.workflow, status: r.status }));
}

/** Runs grouped by workflow, the workflow with the newest run first. */
export function byWorkflow(state: IState): Array<{ workflow: string; runs: IRun[] }> {
  const groups = new Map<string, IRun[]>();
  for (const run of state.runs) {
    const key = run.project && run.project !== DEFAULT_PROJECT ? `${run.project}/${run.workflow}` : run.workflow;
    if (!groups.has(key)) {
      groups.set(key, []);
    }
    groups.get(key)!.push(run);
  }
  return [...groups.entries()].map(([workflow, runs]) => ({ workflow, runs }));
}

/** The newest run that is still active, if any. */
export function activeRun(state: IState): IRun | undefined {
  return state.runs.find(r => !FINAL_STATES.includes(r.status));
}

// --- events ------------------------------------------------------------------------------------

function applyEvent(state: IState, event: IBusEvent): IState {
  if (state.events.some(e => e.version === event.version)) {
    return state; // the push channel and the poll can both deliver one event
  }
  const events = [event, ...state.events].sort((a, b) => b.version - a.version).slice(0, MAX_EVENTS);
  let runs = state.runs;
  if (event.run_id !== null && event.event_type === JOB_STATUS_CHANGED) {
    runs = withRun(runs, event.run_id, workflowOf(event.key), run => applyJobEvent(run, event));
  } else if (event.run_id !== null && event.event_type === RUN_STATUS_CHANGED) {
    runs = withRun(runs, event.run_id, event.key, run => ({ ...run, status: event.value }));
  } else if (event.run_id !== null && event.event_type === MODEL_SWAPPED) {
    const serving = servedVersion(event.value);
    if (serving !== null) {
      runs = withRun(runs, event.run_id, workflowOf(event.key), run => withJob(run, jobOf(event.key, run.workflow),
        job => ({ ...job, serving })));
    }
  }
  return { ...state, events, runs, lastVersion: Math.max(state.lastVersion, event.version) };
}

function applyJobEvent(run: IRun, event: IBusEvent): IRun {
  const name = jobOf(event.key, run.workflow);
  const old = run.jobs.find(j => j.name === name);
  if (old && old.version >= event.version) {
    return run; // an older event than the one shown
  }
  const job: IJob = {
    ...(old ?? emptyJob(name)),
    state: event.value,
    version: event.version,
    history: pushHistory(old?.history ?? [], event.value)
  };
  if (
    event.value === JobState.STARTING ||
    (event.value === JobState.RUNNING && old && FINAL_STATES.includes(old.state))
  ) {
    job.endedAt = null;
  }
  const jobs = old ? run.jobs.map(j => (j.name === name ? job : j)) : [...run.jobs, job];
  let status = run.status;
  if (!FINAL_STATES.includes(event.value) && FINAL_STATES.includes(status) === false) {
    status = status || RunState.RUNNING;
  }
  return { ...run, jobs, status };
}

/** `ctr v2` from a MODEL_SWAPPED value (`{"model": "ctr", "version": 2, ...}`), null when it is not one. */
export function servedVersion(value: string): string | null {
  try {
    const parsed = JSON.parse(value);
    const version = Number(parsed?.version);
    if (typeof parsed?.model === 'string' && Number.isInteger(version)) {
      return `${parsed.model} v${version}`;
    }
  } catch {
    // not JSON: not a swap this page understands
  }
  return null;
}

function withJob(run: IRun, name: string, change: (j: IJob) => IJob): IRun {
  const old = run.jobs.find(j => j.name === name);
  const job = change(old ?? emptyJob(name));
  return { ...run, jobs: old ? run.jobs.map(j => (j.name === name ? job : j)) : [...run.jobs, job] };
}

function withRun(runs: IRun[], id: number, workflow: string, change: (r: IRun) => IRun): IRun[] {
  const found = runs.find(r => r.id === id);
  if (found) {
    return runs.map(r => (r.id === id ? change(r) : r));
  }
  const fresh: IRun = {
    id,
    workflow,
    project: DEFAULT_PROJECT,
    status: RunState.RUNNING,
    createdAt: null,
    jobs: [],
    loaded: false
  };
  return [change(fresh), ...runs].sort((a, b) => b.id - a.id);
}

function workflowOf(key: string): string {
  const dot = key.lastIndexOf('.');
  return dot > 0 ? key.slice(0, dot) : key;
}

function jobOf(key: string, workflow: string): string {
  return key.startsWith(workflow + '.') ? key.slice(workflow.length + 1) : key.slice(key.lastIndexOf('.') + 1);
}

function pushHistory(history: string[], state: string): string[] {
  if (history[history.length - 1] === state) {
    return history;
  }
  return [...history, state].slice(-HISTORY);
}

// --- runs from REST ------------------------------------------------------------------------------

function mergeRuns(state: IState, fresh: IRun[]): IState {
  const old = new Map(state.runs.map(r => [r.id, r]));
  const runs = fresh.map(run => {
    const known = old.get(run.id);
    if (!known) {
      return run;
    }
    // The list carries no jobs: keep those we know; a status seen on the bus is at least as new.
    const status = FINAL_STATES.includes(known.status) ? known.status : run.status;
    return { ...run, status, jobs: known.jobs, loaded: known.loaded };
  });
  for (const run of state.runs) {
    if (!fresh.some(r => r.id === run.id)) {
      runs.push(run); // seen on the bus, not yet in the (possibly paged) list
    }
  }
  runs.sort((a, b) => b.id - a.id);
  return { ...state, runs };
}

function applyRunDetail(state: IState, detail: IRun, asOfVersion: number): IState {
  const known = state.runs.find(r => r.id === detail.id);
  let jobs = detail.jobs;
  let status = detail.status;
  if (known) {
    // Once a job's status came from the bus, the bus stays the source of its state (the database may
    // lag the bus, and an event the push missed comes back through `GET events`): the detail adds the
    // attempt, times and error. A job the bus has not spoken of takes the detail's state.
    jobs = detail.jobs.map(job => {
      const live = known.jobs.find(j => j.name === job.name);
      if (!live) {
        return job;
      }
      const fromBus = live.version > 0 && (job.version > 0 ? live.version >= job.version : true);
      if (fromBus || live.version > asOfVersion) {
        return { ...job, state: live.state, version: live.version, history: live.history };
      }
      return { ...job, history: pushHistory(live.history, job.state) };
    });
    for (const live of known.jobs) {
      if (!jobs.some(j => j.name === live.name)) {
        jobs.push(live);
      }
    }
    if (FINAL_STATES.includes(known.status) && !FINAL_STATES.includes(status)) {
      status = known.status;
    }
  }
  const run: IRun = { ...detail, jobs, status, loaded: true };
  const runs = known ? state.runs.map(r => (r.id === run.id ? run : r)) : [...state.runs, run];
  runs.sort((a, b) => b.id - a.id);
  return { ...state, runs };
}

// --- models --------------------------------------------------------------------------------------

function mergeModels(state: IState, raw: unknown[]): IState {
  const old = new Map(state.models.map(m => [m.name, m]));
  const models = raw.map(item => {
    const name = typeof item === 'string' ? item : String(field(item, 'name', 'model') ?? '');
    const inline = typeof item === 'object' && item !== null ? (item as any).versions : undefined;
    const versions = Array.isArray(inline)
      ? inline.map(v => normaliseVersion(v, name))
      : old.get(name)?.versions ?? [];
    return { name, versions: sortVersions(versions) };
  });
  models.sort((a, b) => a.name.localeCompare(b.name));
  return { ...state, models };
}

function applyVersions(state: IState, model: string, raw: unknown[]): IState {
  const versions = sortVersions(raw.map(v => normaliseVersion(v, model)));
  const exists = state.models.some(m => m.name === model);
  const models = exists
    ? state.models.map(m => (m.name === model ? { ...m, versions } : m))
    : [...state.models, { name: model, versions }];
  return { ...state, models };
}

function sortVersions(versions: IModelVersion[]): IModelVersion[] {
  return [...versions].sort((a, b) => b.version - a.version);
}

// --- normalising REST answers -----------------------------------------------------------------------

/** A list out of `[...]` or `{"<key>": [...]}`. */
export function listOf(value: unknown, key: string): any[] {
  if (Array.isArray(value)) {
    return value;
  }
  if (value && typeof value === 'object' && Array.isArray((value as any)[key])) {
    return (value as any)[key];
  }
  return [];
}

function field(obj: unknown, ...names: string[]): any {
  if (!obj || typeof obj !== 'object') {
    return undefined;
  }
  for (const name of names) {
    const value = (obj as any)[name];
    if (value !== undefined) {
      return value;
    }
  }
  return undefined;
}

function text(value: unknown): string | null {
  return value === undefined || value === null ? null : String(value);
}

export function normaliseRun(raw: unknown): IRun {
  const rawJobs = field(raw, 'jobs');
  let jobs: IJob[] = [];
  if (Array.isArray(rawJobs)) {
    jobs = rawJobs.map(normaliseJob);
  } else if (rawJobs && typeof rawJobs === 'object') {
    jobs = Object.entries(rawJobs).map(([name, value]) =>
      typeof value === 'string' ? { ...emptyJob(name), state: value } : normaliseJob({ name, ...(value as object) })
    );
  }
  return {
    id: Number(field(raw, 'id', 'run_id')),
    workflow: String(field(raw, 'workflow', 'workflow_name') ?? ''),
    project: String(field(raw, 'project') ?? DEFAULT_PROJECT),
    status: String(field(raw, 'status', 'state') ?? RunState.RUNNING),
    createdAt: text(field(raw, 'created_at', 'create_time', 'started_at', 'start_time')),
    jobs,
    loaded: Array.isArray(rawJobs) || (!!rawJobs && typeof rawJobs === 'object')
  };
}

function normaliseJob(raw: unknown): IJob {
  const state = String(field(raw, 'state', 'status') ?? JobState.INIT);
  return {
    name: String(field(raw, 'name', 'job') ?? ''),
    state,
    attempt: Number(field(raw, 'attempt') ?? 0),
    startedAt: text(field(raw, 'started_at', 'start_time')),
    endedAt: text(field(raw, 'ended_at', 'end_time')),
    error: text(field(raw, 'error')),
    version: Number(field(raw, 'version') ?? 0),
    history: [state],
    serving: null
  };
}

function emptyJob(name: string): IJob {
  return {
    name,
    state: JobState.INIT,
    attempt: 0,
    startedAt: null,
    endedAt: null,
    error: null,
    version: 0,
    history: [],
    serving: null
  };
}

export function normaliseEvent(raw: any): IBusEvent {
  const run = raw?.run_id;
  return {
    version: Number(raw?.version ?? 0),
    key: String(raw?.key ?? ''),
    value: raw?.value === undefined || raw?.value === null ? '' : String(raw.value),
    event_type: String(raw?.event_type ?? 'UNDEFINED'),
    namespace: String(raw?.namespace ?? DEFAULT_NAMESPACE),
    sender: raw?.sender ?? null,
    create_time: raw?.create_time ?? null,
    run_id: run === undefined || run === null || run === '' ? null : Number(run)
  };
}

export function normaliseVersion(raw: unknown, model: string): IModelVersion {
  const metrics = field(raw, 'metrics');
  return {
    model: String(field(raw, 'model') ?? model),
    version: Number(field(raw, 'version')),
    stage: String(field(raw, 'stage') ?? Stage.GENERATED),
    uri: String(field(raw, 'uri') ?? ''),
    metrics: metrics && typeof metrics === 'object' ? metrics : null
  };
}

/** The stage buttons a version offers: the stages it may move to (meta/models.py). */
export function nextStages(stage: string): string[] {
  return Object.hasOwn(NEXT_STAGES, stage) ? [...NEXT_STAGES[stage]] : [];
}

/** The button's label for a target stage. */
export function stageVerb(stage: string): string {
  return { [Stage.VALIDATED]: 'Validate', [Stage.DEPLOYED]: 'Deploy', [Stage.DEPRECATED]: 'Deprecate' }[stage] ?? stage;
}
