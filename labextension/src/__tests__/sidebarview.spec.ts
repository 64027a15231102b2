/**
 * @jest-environment jsdom
 */
import { Action, IBusEvent, initialState, IState, reduce } from '../model';
import { initialViewState, IViewState, renderSidebar } from '../sidebarview';

let version = 0;
function ev(key: string, value: string, event_type = 'JOB_STATUS_CHANGED', run_id: number | null = 1): Action {
  version += 1;
  const sender = 'scheduler';
  const event: IBusEvent = { version, key, value, event_type, namespace: 'default', sender, create_time: 0, run_id };
  return { type: 'event', event };
}

function state(...actions: Action[]): IState {
  return actions.reduce(reduce, initialState());
}

function render(s: IState, view: Partial<IViewState> = {}): HTMLElement {
  return renderSidebar(s, { ...initialViewState(), ...view });
}

function texts(root: Element, selector: string): string[] {
  return [...root.querySelectorAll(selector)].map(el => el.textContent ?? '');
}

const runs = (...list: object[]): Action => ({ type: 'runs', runs: list });

beforeEach(() => {
  version = 0;
});

describe('the sidebar view', () => {
  it('an empty state says so in each section, and the header says whether events arrive live', () => {
    const root = render(initialState());
    expect(root.className).toBe('aiflow-body');
    expect(texts(root, '.aiflow-empty')).toEqual([
      'No runs yet: submit a workflow.',
      'No models registered.',
      'No events yet.'
    ]);
    expect(root.querySelector('.aiflow-live')?.getAttribute('title')).toBe('polling');
    expect(root.querySelector('.aiflow-live-on')).toBeNull();
    expect(root.querySelector('button[data-action="refresh"]')?.textContent).toBe('Refresh');
    expect(root.querySelector('.aiflow-error')).toBeNull();
    expect(root.querySelector('.aiflow-log-section')).toBeNull();
    const live = render(initialState(), { live: true, error: 'server gone' });
    const dot = live.querySelector('.aiflow-live.aiflow-live-on');
    expect(dot?.getAttribute('title')).toBe('live: following the event bus');
    expect(live.querySelector('.aiflow-error')?.textContent).toBe('server gone');
  });

  it('a running run offers Stop and Restart; a FAILED one Re-run and neither Stop nor Restart', () => {
    const s = state(
      runs({ id: 1, workflow: 'ctr', status: 'RUNNING' }, { id: 2, workflow: 'ctr', status: 'FAILED' }),
      ev('ctr.prep', 'RUNNING', 'JOB_STATUS_CHANGED', 1),
      ev('ctr.prep', 'FAILED', 'JOB_STATUS_CHANGED', 2)
    );
    const root = render(s, { selectedRun: 2 });
    const running = root.querySelector('.aiflow-workflow[data-workflow="ctr"] .aiflow-run[data-run-id="1"]')!;
    expect(running.getAttribute('data-status')).toBe('RUNNING');
    expect(running.className).toBe('aiflow-run');
    expect(running.querySelector('button[data-action="stop"][data-run="1"]')?.textContent).toBe('Stop');
    expect(running.querySelector('button[data-action="rerun"]')).toBeNull();
    expect(running.querySelector('li.aiflow-job[data-job="prep"] button[data-action="restart"]')).not.toBeNull();
    const failed = root.querySelector('.aiflow-run[data-run-id="2"]')!;
    expect(failed.className).toBe('aiflow-run aiflow-selected');
    expect(failed.querySelector('.aiflow-badge.aiflow-status-failed')?.textContent).toBe('FAILED');
    expect(failed.querySelector('button[data-action="rerun"][data-run="2"]')?.textContent).toBe('Re-run');
    expect(failed.querySelector('button[data-action="stop"]')).toBeNull();
    expect(failed.querySelector('button[data-action="restart"]')).toBeNull();
    expect(failed.querySelector('button[data-action="log"][data-run="2"][data-job="prep"]')?.textContent).toBe('Log');
  });

  it('a job restarted while the page watched shows its attempt and the states it passed through', () => {
    const states = ['STARTING', 'RUNNING', 'KILLED', 'STARTING', 'RUNNING'];
    const s = state(...states.map(value => ev('ctr.serve', value)), {
      type: 'run',
      run: { id: 1, workflow: 'ctr', status: 'RUNNING', jobs: [{ name: 'serve', state: 'RUNNING', attempt: 2 }] },
      asOfVersion: 0
    });
    const job = render(s).querySelector('li.aiflow-job[data-run-id="1"][data-job="serve"]')!;
    expect(job.getAttribute('data-state')).toBe('RUNNING');
    expect(job.getAttribute('data-history')).toBe(states.join(' '));
    expect(job.getAttribute('title')).toBe(states.join(' → '));
    expect(job.querySelector('.aiflow-history')?.textContent).toBe(states.join(' → '));
    expect(job.querySelector('.aiflow-attempt')?.textContent).toBe('attempt 2');
    const once = render(state(ev('ctr.prep', 'STARTING'), ev('ctr.prep', 'FINISHED')));
    expect(once.querySelector('li.aiflow-job[data-job="prep"] .aiflow-history')).toBeNull();
    expect(once.querySelector('li.aiflow-job[data-job="prep"] .aiflow-attempt')).toBeNull();
  });

  it('groups runs by project/workflow and shows the newest five of each', () => {
    const list = [1, 2, 3, 4, 5, 6, 7].map(id => ({ id, workflow: 'etl', project: 'demo', status: 'FINISHED' }));
    const root = render(state(runs(...list)));
    const group = root.querySelector('.aiflow-workflow[data-workflow="demo/etl"]')!;
    expect(group.querySelector('.aiflow-workflow-name')?.textContent).toBe('demo/etl');
    expect(texts(group, '.aiflow-run-id')).toEqual(['run 7', 'run 6', 'run 5', 'run 4', 'run 3']);
    expect(group.querySelector('.aiflow-run-row[data-action="select-run"][data-run="7"]')).not.toBeNull();
  });

  it('an event value that is JSON shows as {…} or […], a long one is cut at 40 characters', () => {
    const s = state(
      ev('ctr', '{"version": 3}', 'MODEL_VALIDATED', null),
      ev('cmd', '[1, 2]', 'SOMETHING', null),
      ev('long', 'x'.repeat(50), 'UNDEFINED', null)
    );
    const root = render(s);
    expect(texts(root, '.aiflow-event-version')).toEqual(['#3', '#2', '#1']);
    expect(texts(root, '.aiflow-event-value')).toEqual(['x'.repeat(40) + '…', '[…]', '{…}']);
    const first = root.querySelector('li.aiflow-event[data-version="1"][data-key="ctr"]')!;
    expect(first.getAttribute('title')).toBe('sender scheduler');
    expect(first.querySelector('.aiflow-event-type')?.textContent).toBe('MODEL_VALIDATED');
    expect(first.querySelector('.aiflow-event-body')?.textContent).toBe('ctr {…}');
  });

  it('shows the newest 20 events', () => {
    const s = state(...Array.from({ length: 25 }, (_, i) => ev(`k${i}`, 'v', 'UNDEFINED', null)));
    expect(render(s).querySelectorAll('li.aiflow-event')).toHaveLength(20);
  });

  it('renders keys, values, names and log text as text, never as markup', () => {
    const evil = '<script>alert(1)</script><img src=x onerror=alert(2)>';
    const s = state(
      ev(evil, evil, 'UNDEFINED', null),
      ev(`${evil}.job`, 'RUNNING', 'JOB_STATUS_CHANGED', 4),
      { type: 'versions', model: evil, versions: [{ version: 1, stage: 'GENERATED', metrics: { [evil]: evil } }] }
    );
    const root = render(s, { log: { run: 4, job: evil }, logText: evil, error: evil });
    expect(root.querySelector('script')).toBeNull();
    expect(root.querySelector('img')).toBeNull();
    const event = root.querySelector('li.aiflow-event[data-version="1"]')!;
    expect(event.getAttribute('data-key')).toBe(evil);
    expect(event.querySelector('.aiflow-event-key')?.textContent).toBe(evil);
    expect(event.querySelector('.aiflow-event-value')?.textContent).toBe(evil.slice(0, 40) + '…');
    expect(root.querySelector('.aiflow-workflow-name')?.textContent).toBe(evil);
    expect(root.querySelector('.aiflow-job-name')?.textContent).toBe('job');
    expect(root.querySelector('.aiflow-model-name')?.textContent).toBe(evil);
    expect(root.querySelector('.aiflow-metrics')?.textContent).toBe(`${evil}=${evil}`);
    expect(root.querySelector('pre.aiflow-log')?.textContent).toBe(evil);
    expect(root.querySelector('.aiflow-error')?.textContent).toBe(evil);
  });

  it('a model version offers one button per stage it may move to, and shows its first metrics', () => {
    const versions = [
      { version: 1, stage: 'GENERATED', metrics: { auc: 0.812345, loss: 0.4, n: 10, extra: 1 } },
      { version: 2, stage: 'DEPLOYED', metrics: null },
      { version: 3, stage: 'DELETED' }
    ];
    const root = render(state({ type: 'versions', model: 'ctr', versions }), {
      selectedVersion: { model: 'ctr', version: 2 }
    });
    const model = root.querySelector('.aiflow-model[data-model="ctr"]')!;
    const v1 = model.querySelector('li.aiflow-version[data-model="ctr"][data-version="1"]')!;
    expect(v1.getAttribute('data-action')).toBe('select-version');
    expect(v1.className).toBe('aiflow-version');
    expect(v1.getAttribute('data-stage')).toBe('GENERATED');
    expect(v1.querySelector('.aiflow-version-id')?.textContent).toBe('v1');
    expect(v1.querySelector('.aiflow-metrics')?.textContent).toBe('auc=0.8123 loss=0.4 n=10');
    const buttons = [...v1.querySelectorAll('button[data-action="stage"]')];
    expect(buttons.map(b => [b.getAttribute('data-stage'), b.textContent, b.getAttribute('title')])).toEqual([
      ['VALIDATED', 'Validate', 'Move v1 to VALIDATED'],
      ['DEPLOYED', 'Deploy', 'Move v1 to DEPLOYED'],
      ['DEPRECATED', 'Deprecate', 'Move v1 to DEPRECATED']
    ]);
    const v2 = model.querySelector('li.aiflow-version[data-version="2"]')!;
    expect(v2.className).toBe('aiflow-version aiflow-selected');
    expect(v2.querySelector('.aiflow-metrics')).toBeNull();
    expect(texts(v2, 'button')).toEqual(['Deprecate']);
    expect(model.querySelectorAll('li.aiflow-version[data-version="3"] button')).toHaveLength(0);
  });

  it('shows the open log under the runs, with a Close button', () => {
    const root = render(state(), { log: { run: 3, job: 'serve' }, logText: 'serving ctr v2' });
    const section = root.querySelector('.aiflow-section.aiflow-log-section[data-log-run="3"][data-log-job="serve"]')!;
    expect(section.querySelector('h3')?.firstChild?.textContent).toBe('Log: serve (run 3)');
    expect(section.querySelector('button[data-action="close-log"]')?.textContent).toBe('Close');
    expect(section.querySelector('pre.aiflow-log')?.textContent).toBe('serving ctr v2');
    const sections = [...root.querySelectorAll('.aiflow-section')].map(el => el.className);
    expect(sections).toEqual([
      'aiflow-section aiflow-runs',
      'aiflow-section aiflow-log-section',
      'aiflow-section aiflow-models',
      'aiflow-section aiflow-events'
    ]);
  });
});
