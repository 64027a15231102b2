/**
 * The "AI Flow" sidebar: workflows → runs → jobs with their live states, a job's log, stop a run,
 * restart a job, model versions with stage buttons, the newest events.
 *
 * State lives in model.ts (pure reducer), what it looks like in sidebarview.ts (pure view); this widget
 * fetches, dispatches, handles clicks and schedules the drawing. Live updates come from the page's bus
 * events (pushed by the server extension through jupyter_server's event bus); a `Poll` with backoff
 * refetches as a fallback and stands by while the sidebar is hidden.
 */
import { Notification } from '@jupyterlab/apputils';
import { Poll } from '@lumino/polling';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';
import { logText, patch, post, requestAPI } from './api';
import {
  Action,
  activeRun,
  endedRuns,
  IBusEvent,
  initialState,
  IRun,
  IState,
  JOB_STATUS_CHANGED,
  JobState,
  MAX_EVENTS,
  MODEL_EVENT_PREFIX,
  reduce,
  RunState,
  stageVerb
} from './model';
import { liveHub } from './live';
import { ILogTarget, initialViewState, IViewState, renderSidebar } from './sidebarview';

const RUNS_DETAILED = 8; // runs whose jobs are fetched on a refresh
const LOG_TAIL = 200;

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
      standby: () => this.view.log === null || !this.isVisible,
      name: 'aiflow-notebook:log'
    });
    this.render();
  }

  get state(): IState {
    return this._state;
  }

  /** The run the palette's "stop run" acts on: the one last clicked, else the newest active one. */
  get selectedRun(): IRun | undefined {
    return this._state.runs.find(r => r.id === this.view.selectedRun) ?? activeRun(this._state);
  }

  /** The model version "open lineage" shows: the one last clicked, else the newest of the first model. */
  get selectedVersion(): { model: string; version: number } | undefined {
    if (this.view.selectedVersion) {
      return this.view.selectedVersion;
    }
    const model = this._state.models.find(m => m.versions.length > 0);
    return model ? { model: model.name, version: model.versions[0].version } : undefined;
  }

  dispatch(action: Action): void {
    const prev = this._state;
    this._state = reduce(prev, action);
    for (const ended of endedRuns(prev, this._state)) {
      const message = `Run ${ended.id} of ${ended.workflow} ${ended.status.toLowerCase()}`;
      if (ended.status === RunState.FINISHED) {
        Notification.success(message, { autoClose: 6000 });
      } else if (ended.status === RunState.KILLED) {
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
      this.view.error = null;
    } catch (error: any) {
      this.view.error = error.message ?? String(error);
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
    this.view.log = target;
    this.view.logText = 'loading…';
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
    const target = this.view.log;
    if (!target) {
      return;
    }
    try {
      const data = await requestAPI(`runs/${target.run}/jobs/${encodeURIComponent(target.job)}/log?tail=${LOG_TAIL}`);
      if (this.view.log === target) {
        this.view.logText = logText(data) || '(the log is empty so far)';
      }
    } catch (error: any) {
      this.view.logText = `cannot read the log: ${error.message ?? error}`;
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
    const newAttempt = event.event_type === JOB_STATUS_CHANGED && event.value === JobState.STARTING;
    if (event.run_id !== null && (!known || newAttempt)) {
      // a run not seen yet, or a new attempt (the push carries no attempt number): read the run once
      this.debounce(`run:${event.run_id}`, () => this.loadRun(event.run_id!));
    }
    if (event.event_type.startsWith(MODEL_EVENT_PREFIX)) {
      this.debounce(`model:${event.key}`, () => this.loadVersions(event.key));
    }
    if (this.view.log && event.event_type === JOB_STATUS_CHANGED && event.run_id === this.view.log.run) {
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
    this.node.replaceChildren(renderSidebar(this._state, { ...this.view, live: liveHub.connected }));
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
        this.view.selectedRun = run;
        this.scheduleRender();
        break;
      case 'select-version':
        this.view.selectedVersion = { model: d.model!, version: Number(d.version) };
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
        this.view.log = null;
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
  private view: IViewState = initialViewState();
  private pending = new Set<string>();
  private frame = 0;
}
