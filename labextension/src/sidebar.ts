/**
 * The "AI Flow" sidebar: workflows → runs → jobs with their live states, a job's log, stop a run,
 * restart a job, model versions with stage buttons, the newest events.
 *
 * State lives in model.ts (pure reducer); this widget fetches, dispatches and draws. Live updates come
 * from the page's bus events (pushed by the server extension through jupyter_server's event bus); a
 * `Poll` with backoff refetches as a fallback and stands by while the sidebar is hidden.
 */
import { Notification } from '@jupyterlab/apputils';
import { Poll } from '@lumino/polling';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';
import { logText, patch, post, requestAPI } from './api';
import { h } from './dom';
import { statusClass } from './graph';
import {
  Action,
  activeRun,
  byWorkflow,
  endedRuns,
  FINAL_STATES,
  IBusEvent,
  initialState,
  IRun,
  IState,
  JOB_STATUS_CHANGED,
  MAX_EVENTS,
  nextStages,
  reduce,
  stageVerb
} from './model';
import { liveHub } from './live';

const RUNS_SHOWN = 5; // runs per workflow
const RUNS_DETAILED = 8; // runs whose jobs are fetched on a refresh
const LOG_TAIL = 200;

export interface ILogTarget {
  run: number;
  job: string;
}

export class AIFlowSidebar extends Widget {
  constructor() {
    super();
    this.id = 'aiflow-sidebar';
    this.addClass('aiflow-sidebar');
    this.title.caption = 'AI Flow';
    this.node.addEventListener('click', this.onClick);
    liveHub.events.connect(this.onBusEvent, this);
    this.poll = new Poll({
      factory: () => this.refresh(),
      frequency: { interval: 5000, backoff: true, max: 60_000 },
      standby: 'when-hidden',
      name: 'aiflow-notebook:sidebar'
    });
    this.logPoll = new Poll({
      factory: () => this.loadLog(),
      frequency: { interval: 2000, backoff: true, max: 30_000 },
      standby: () => this.log === null || !this.isVisible,
      name: 'aiflow-notebook:log'
    });
    this.render();
  }

  get state(): IState {
    return this._state;
  }

  /** The run the palette's "stop run" acts on: the one last clicked, else the newest active one. */
  get selectedRun(): IRun | undefined {
    return this._state.runs.find(r => r.id === this.selected) ?? activeRun(this._state);
  }

  /** The model version "open lineage" shows: the one last clicked, else the newest of the first model. */
  get selectedVersion(): { model: string; version: number } | undefined {
    if (this.selectedModelVersion) {
      return this.selectedModelVersion;
    }
    const model = this._state.models.find(m => m.versions.length > 0);
    return model ? { model: model.name, version: model.versions[0].version } : undefined;
  }

  dispatch(action: Action): void {
    const prev = this._state;
    this._state = reduce(prev, action);
    for (const ended of endedRuns(prev, this._state)) {
      const message = `Run ${ended.id} of ${ended.workflow} ${ended.status.toLowerCase()}`;
      if (ended.status === 'FINISHED') {
        Notification.success(message, { autoClose: 6000 });
      } else if (ended.status === 'KILLED') {
        Notification.warning(message, { autoClose: 10_000 }); // stopped on request: no alarm
      } else {
        Notification.error(message, { autoClose: false }); // FAILED: stays until dismissed
      }
    }
    if (this._state !== prev) {
      this.scheduleRender();
    }
  }

  /** Refetch runs (and the jobs of the newest ones), models and events. */
  async refresh(): Promise<void> {
    const asOf = this._state.lastVersion;
    try {
      const runs = await requestAPI('runs');
      this.dispatch({ type: 'runs', runs });
      const detailed = this._state.runs.slice(0, RUNS_DETAILED);
      await Promise.all(detailed.map(run => this.loadRun(run.id, asOf)));
      // First the newest events; then page forward from the newest seen (what the push may have missed).
      const last = this._state.lastVersion;
      const events = await requestAPI(last > 0 ? `events?since_version=${last}&limit=1000` : `events?limit=${MAX_EVENTS}`);
      this.dispatch({ type: 'events', events });
      await this.loadModels();
      this.error = null;
    } catch (error: any) {
      this.error = error.message ?? String(error);
      this.scheduleRender();
      throw error; // the poll backs off
    }
  }

  async stopRun(run: number): Promise<void> {
    await this.act(`Stopping run ${run}`, () => post(`runs/${run}/stop`));
  }

  async rerun(run: number): Promise<void> {
    await this.act(`Running run ${run}'s workflow again`, () => post(`runs/${run}/rerun`));
    void this.poll.refresh(); // the new run shows at once, before its first status event
  }

  async restartJob(run: number, job: string): Promise<void> {
    await this.act(`Restarting ${job} of run ${run}`, () => post(`runs/${run}/jobs/${encodeURIComponent(job)}/restart`));
  }

  async setStage(model: string, version: number, stage: string): Promise<void> {
    await this.act(`${stageVerb(stage)} ${model} v${version}`, () =>
      patch(`models/${encodeURIComponent(model)}/versions/${version}`, { stage })
    );
    await this.loadVersions(model);
  }

  async openLog(target: ILogTarget): Promise<void> {
    this.log = target;
    this.logText = 'loading…';
    this.scheduleRender();
    await this.loadLog();
    void this.logPoll.refresh();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    liveHub.events.disconnect(this.onBusEvent, this);
    this.node.removeEventListener('click', this.onClick);
    this.poll.dispose();
    this.logPoll.dispose();
    super.dispose();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.render();
    void this.poll.refresh();
  }

  // --- loading --------------------------------------------------------------------------------------

  private async loadRun(id: number, asOfVersion: number = this._state.lastVersion): Promise<void> {
    const run = await requestAPI(`runs/${id}`);
    this.dispatch({ type: 'run', run, asOfVersion });
  }

  private async loadModels(): Promise<void> {
    const models = await requestAPI('models');
    this.dispatch({ type: 'models', models });
    await Promise.all(this._state.models.map(m => this.loadVersions(m.name)));
  }

  private async loadVersions(model: string): Promise<void> {
    const versions = await requestAPI(`models/${encodeURIComponent(model)}/versions`);
    this.dispatch({ type: 'versions', model, versions });
  }

  private async loadLog(): Promise<void> {
    const target = this.log;
    if (!target) {
      return;
    }
    try {
      const data = await requestAPI(`runs/${target.run}/jobs/${encodeURIComponent(target.job)}/log?tail=${LOG_TAIL}`);
      if (this.log === target) {
        this.logText = logText(data) || '(the log is empty so far)';
      }
    } catch (error: any) {
      this.logText = `cannot read the log: ${error.message ?? error}`;
    }
    this.scheduleRender();
  }

  private async act(what: string, call: () => Promise<unknown>): Promise<void> {
    try {
      await call();
    } catch (error: any) {
      Notification.error(`${what} failed: ${error.message ?? error}`, { autoClose: 10_000 });
      throw error;
    }
  }

  private onBusEvent(_: unknown, event: IBusEvent): void {
    this.dispatch({ type: 'event', event });
    const known = event.run_id !== null && this._state.runs.find(r => r.id === event.run_id)?.loaded;
    if (event.run_id !== null && (!known || (event.event_type === JOB_STATUS_CHANGED && event.value === 'STARTING'))) {
      // a run not seen yet, or a new attempt (the push carries no attempt number): read the run once
      this.debounce(`run:${event.run_id}`, () => this.loadRun(event.run_id!));
    }
    if (event.event_type.startsWith('MODEL_')) {
      this.debounce(`model:${event.key}`, () => this.loadVersions(event.key));
    }
    if (this.log && event.event_type === JOB_STATUS_CHANGED && event.run_id === this.log.run) {
      this.debounce('log', () => this.loadLog());
    }
  }

  private debounce(key: string, call: () => Promise<void>): void {
    if (this.pending.has(key)) {
      return;
    }
    this.pending.add(key);
    setTimeout(() => {
      this.pending.delete(key);
      call().catch(() => undefined);
    }, 150);
  }

  // --- drawing ----------------------------------------------------------------------------------------

  private scheduleRender(): void {
    if (this.frame !== 0) {
      return;
    }
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  private render(): void {
    if (this.isDisposed) {
      return;
    }
    const state = this._state;
    const body = h(
      'div',
      { className: 'aiflow-body' },
      h(
        'div',
        { className: 'aiflow-header' },
        h('span', { className: 'aiflow-title' }, 'AI Flow'),
        h('span', {
          className: `aiflow-live ${liveHub.connected ? 'aiflow-live-on' : ''}`,
          title: liveHub.connected ? 'live: following the event bus' : 'polling'
        }),
        h('button', { className: 'aiflow-button', 'data-action': 'refresh', title: 'Refresh' }, 'Refresh')
      ),
      this.error ? h('div', { className: 'aiflow-error' }, this.error) : null,
      this.renderRuns(state),
      this.renderLog(),
      this.renderModels(state),
      this.renderEvents(state)
    );
    this.node.replaceChildren(body);
  }

  private renderRuns(state: IState): HTMLElement {
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
          group.runs.slice(0, RUNS_SHOWN).map(run => this.renderRun(run))
        )
      )
    );
  }

  private renderRun(run: IRun): HTMLElement {
    const active = !FINAL_STATES.includes(run.status);
    return h(
      'div',
      {
        className: `aiflow-run${this.selected === run.id ? ' aiflow-selected' : ''}`,
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
        run.jobs.map(job =>
          h(
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
            h(
              'span',
              { className: 'aiflow-actions' },
              button('log', 'Log', { 'data-run': run.id, 'data-job': job.name }, 'Show this job\'s log'),
              active
                ? button('restart', 'Restart', { 'data-run': run.id, 'data-job': job.name }, 'Restart this job')
                : null
            ),
            restarted(job.history) ? h('div', { className: 'aiflow-history' }, job.history.join(' → ')) : null
          )
        )
      )
    );
  }

  private renderLog(): HTMLElement | null {
    if (!this.log) {
      return null;
    }
    return h(
      'section',
      { className: 'aiflow-section aiflow-log-section', 'data-log-run': this.log.run, 'data-log-job': this.log.job },
      h(
        'h3',
        {},
        `Log: ${this.log.job} (run ${this.log.run})`,
        button('close-log', 'Close', {}, 'Close the log')
      ),
      h('pre', { className: 'aiflow-log' }, this.logText)
    );
  }

  private renderModels(state: IState): HTMLElement {
    return h(
      'section',
      { className: 'aiflow-section aiflow-models' },
      h('h3', {}, 'Models'),
      state.models.length === 0 ? h('div', { className: 'aiflow-empty' }, 'No models registered.') : null,
      state.models.map(model =>
        h(
          'div',
          { className: 'aiflow-model', 'data-model': model.name },
          h('div', { className: 'aiflow-model-name' }, model.name),
          h(
            'ul',
            { className: 'aiflow-versions' },
            model.versions.slice(0, 6).map(v =>
              h(
                'li',
                {
                  className: `aiflow-version${this.isSelectedVersion(v.model, v.version) ? ' aiflow-selected' : ''}`,
                  'data-model': v.model,
                  'data-version': v.version,
                  'data-stage': v.stage,
                  'data-action': 'select-version'
                },
                h('span', { className: 'aiflow-version-id' }, `v${v.version}`),
                badge(v.stage),
                v.metrics
                  ? h(
                      'span',
                      { className: 'aiflow-metrics' },
                      Object.entries(v.metrics)
                        .slice(0, 3)
                        .map(([k, value]) => `${k}=${typeof value === 'number' ? +value.toFixed(4) : value}`)
                        .join(' ')
                    )
                  : null,
                h(
                  'span',
                  { className: 'aiflow-actions' },
                  nextStages(v.stage).map(stage =>
                    button('stage', stageVerb(stage), {
                      'data-model': v.model,
                      'data-version': v.version,
                      'data-stage': stage
                    }, `Move v${v.version} to ${stage}`)
                  )
                )
              )
            )
          )
        )
      )
    );
  }

  private renderEvents(state: IState): HTMLElement {
    return h(
      'section',
      { className: 'aiflow-section aiflow-events' },
      h('h3', {}, 'Newest events'),
      state.events.length === 0 ? h('div', { className: 'aiflow-empty' }, 'No events yet.') : null,
      h(
        'ul',
        { className: 'aiflow-event-list' },
        state.events.slice(0, 20).map(e =>
          h(
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
          )
        )
      )
    );
  }

  private isSelectedVersion(model: string, version: number): boolean {
    return this.selectedModelVersion?.model === model && this.selectedModelVersion.version === version;
  }

  private onClick = (event: MouseEvent): void => {
    const target = (event.target as Element).closest('[data-action]') as HTMLElement | null;
    if (!target || !this.node.contains(target)) {
      return;
    }
    const d = target.dataset;
    const run = Number(d.run);
    const ignore = () => undefined;
    switch (d.action) {
      case 'refresh':
        void this.poll.refresh();
        break;
      case 'select-run':
        this.selected = run;
        this.scheduleRender();
        break;
      case 'select-version':
        this.selectedModelVersion = { model: d.model!, version: Number(d.version) };
        this.scheduleRender();
        break;
      case 'stop':
        this.stopRun(run).catch(ignore);
        break;
      case 'rerun':
        this.rerun(run).catch(ignore);
        break;
      case 'restart':
        this.restartJob(run, d.job!).catch(ignore);
        break;
      case 'log':
        void this.openLog({ run, job: d.job! });
        break;
      case 'close-log':
        this.log = null;
        this.scheduleRender();
        break;
      case 'stage':
        this.setStage(d.model!, Number(d.version), d.stage!).catch(ignore);
        break;
    }
    if (d.action !== 'select-run' && d.action !== 'select-version') {
      event.stopPropagation();
    }
  };

  private _state: IState = initialState();
  private poll: Poll;
  private logPoll: Poll;
  private log: ILogTarget | null = null;
  private logText = '';
  private error: string | null = null;
  private selected: number | null = null;
  private selectedModelVersion: { model: string; version: number } | null = null;
  private pending = new Set<string>();
  private frame = 0;
}

/** Whether a job ended and ran again while the page watched (then its states are shown). */
function restarted(history: string[]): boolean {
  return history.some((state, i) => FINAL_STATES.includes(state) && i < history.length - 1);
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
