import {
  activeRun,
  byWorkflow,
  endedRuns,
  IBusEvent,
  initialState,
  IState,
  MAX_EVENTS,
  nextStages,
  reduce
} from '../model';

let version = 0;
function ev(key: string, value: string, event_type = 'JOB_STATUS_CHANGED', run_id: number | null = 1): IBusEvent {
  version += 1;
  return { version, key, value, event_type, namespace: 'default', sender: 'scheduler', create_time: 0, run_id };
}

function apply(state: IState, ...events: IBusEvent[]): IState {
  return events.reduce((s, event) => reduce(s, { type: 'event', event }), state);
}

function job(state: IState, run: number, name: string) {
  return state.runs.find(r => r.id === run)?.jobs.find(j => j.name === name);
}

beforeEach(() => {
  version = 0;
});

describe('bus events', () => {
  it('a job status event creates the run and the job, then moves its state', () => {
    let s = apply(initialState(), ev('ctr.prep', 'STARTING'), ev('ctr.prep', 'RUNNING'));
    expect(s.runs.map(r => [r.id, r.workflow, r.status])).toEqual([[1, 'ctr', 'RUNNING']]);
    expect(job(s, 1, 'prep')?.state).toBe('RUNNING');
    s = apply(s, ev('ctr.prep', 'FINISHED'));
    expect(job(s, 1, 'prep')?.state).toBe('FINISHED');
    expect(job(s, 1, 'prep')?.history).toEqual(['STARTING', 'RUNNING', 'FINISHED']);
  });

  it('a restarted streaming job goes RUNNING → KILLED → RUNNING and keeps that history', () => {
    const s = apply(
      initialState(),
      ev('ctr.serve', 'RUNNING'),
      ev('ctr', 'VALIDATED', 'MODEL_VALIDATED', null),
      ev('ctr.serve', 'KILLED'),
      ev('ctr.serve', 'STARTING'),
      ev('ctr.serve', 'RUNNING')
    );
    expect(job(s, 1, 'serve')?.history).toEqual(['RUNNING', 'KILLED', 'STARTING', 'RUNNING']);
    expect(s.runs[0].status).toBe('RUNNING');
  });

  it('ignores an event delivered twice (push and poll) and an older one after a newer', () => {
    const running = ev('ctr.prep', 'RUNNING');
    const finished = ev('ctr.prep', 'FINISHED');
    const s = apply(initialState(), running, finished, running, finished);
    expect(s.events.map(e => e.version)).toEqual([2, 1]);
    expect(job(s, 1, 'prep')?.state).toBe('FINISHED');
    const late = apply(initialState(), finished, running);
    expect(job(late, 1, 'prep')?.state).toBe('FINISHED');
  });

  it('a swap shows the version a running job serves, for its own run only; garbage changes nothing', () => {
    let s = apply(initialState(), ev('ctr.serve', 'RUNNING'), ev('ctr.serve', 'RUNNING', 'JOB_STATUS_CHANGED', 2));
    s = apply(s, ev('ctr.serve', JSON.stringify({ model: '<b>ctr</b>', version: 2, instance: 0 }), 'MODEL_SWAPPED', 1));
    expect(job(s, 1, 'serve')?.serving).toBe('<b>ctr</b> v2');
    expect(job(s, 1, 'serve')?.state).toBe('RUNNING');
    expect(job(s, 2, 'serve')?.serving).toBeNull();
    s = apply(s, ev('ctr.serve', 'not json', 'MODEL_SWAPPED', 1), ev('ctr.serve', '{"model": 3}', 'MODEL_SWAPPED', 1));
    expect(job(s, 1, 'serve')?.serving).toBe('<b>ctr</b> v2');
  });

  it('keeps runs apart by run id even for one workflow', () => {
    const s = apply(initialState(), ev('ctr.prep', 'RUNNING', undefined, 1), ev('ctr.prep', 'FAILED', undefined, 2));
    expect(s.runs.map(r => r.id)).toEqual([2, 1]);
    expect(job(s, 1, 'prep')?.state).toBe('RUNNING');
    expect(job(s, 2, 'prep')?.state).toBe('FAILED');
  });

  it('keeps the newest MAX_EVENTS events, newest first', () => {
    let s = initialState();
    for (let i = 0; i < MAX_EVENTS + 10; i++) {
      s = apply(s, ev('k', String(i), 'UNDEFINED', null));
    }
    expect(s.events).toHaveLength(MAX_EVENTS);
    expect(s.events[0].version).toBe(MAX_EVENTS + 10);
    expect(s.lastVersion).toBe(MAX_EVENTS + 10);
  });

  it('a run status event ends the run, and endedRuns reports it once', () => {
    const before = apply(initialState(), ev('ctr.prep', 'RUNNING'));
    const after = apply(before, ev('ctr.prep', 'FINISHED'), ev('ctr', 'FINISHED', 'WORKFLOW_RUN_STATUS_CHANGED'));
    expect(after.runs[0].status).toBe('FINISHED');
    expect(endedRuns(before, after)).toEqual([{ id: 1, workflow: 'ctr', status: 'FINISHED' }]);
    expect(endedRuns(after, apply(after, ev('x', '1', 'UNDEFINED', null)))).toEqual([]);
  });

  it('runs already over when first seen raise no notification', () => {
    const s = reduce(initialState(), { type: 'runs', runs: [{ id: 4, workflow: 'w', status: 'FAILED' }] });
    expect(endedRuns(initialState(), s)).toEqual([]);
  });
});

describe('REST answers', () => {
  it('merges the run list with runs known from the bus, newest first', () => {
    let s = apply(initialState(), ev('ctr.prep', 'RUNNING', undefined, 3));
    s = reduce(s, {
      type: 'runs',
      runs: { runs: [{ run_id: 2, workflow: 'ctr', state: 'FINISHED' }, { id: 3, workflow: 'ctr', status: 'RUNNING' }] }
    });
    expect(s.runs.map(r => [r.id, r.status])).toEqual([[3, 'RUNNING'], [2, 'FINISHED']]);
    expect(job(s, 3, 'prep')?.state).toBe('RUNNING');
  });

  it('a run detail fills in the jobs; a status event newer than the request wins over it', () => {
    let s = apply(initialState(), ev('ctr.prep', 'RUNNING'));
    const asOf = s.lastVersion;
    s = apply(s, ev('ctr.prep', 'FINISHED')); // arrives while GET runs/1 is in flight
    s = reduce(s, {
      type: 'run',
      asOfVersion: asOf,
      run: { id: 1, workflow: 'ctr', status: 'RUNNING', jobs: [
        { name: 'prep', state: 'RUNNING', attempt: 0 },
        { name: 'train', state: 'INIT', attempt: 0 }
      ] }
    });
    expect(s.runs[0].loaded).toBe(true);
    expect(s.runs[0].jobs.map(j => [j.name, j.state])).toEqual([['prep', 'FINISHED'], ['train', 'INIT']]);
  });

  it('a run detail adds attempts to jobs the bus moved, and states to jobs it did not', () => {
    let s = apply(initialState(), ev('ctr.serve', 'KILLED'), ev('ctr.serve', 'STARTING'));
    // the database still has the previous attempt: its state must not undo the bus
    s = reduce(s, {
      type: 'run',
      asOfVersion: s.lastVersion,
      run: { id: 1, workflow: 'ctr', status: 'RUNNING', jobs: {
        serve: { state: 'KILLED', attempt: 1 },
        prep: { state: 'FINISHED', attempt: 0 }
      } }
    });
    expect(job(s, 1, 'serve')).toMatchObject({ state: 'STARTING', attempt: 1 });
    expect(job(s, 1, 'serve')?.history).toEqual(['KILLED', 'STARTING']);
    expect(job(s, 1, 'prep')?.state).toBe('FINISHED');
  });

  it('an event the push missed comes back through GET events, in order', () => {
    let s = apply(initialState(), ev('ctr.serve', 'RUNNING'));
    const missed = [ev('ctr.serve', 'KILLED'), ev('ctr.serve', 'STARTING'), ev('ctr.serve', 'RUNNING')];
    s = reduce(s, { type: 'events', events: { events: [missed[2], missed[0], missed[1]] } });
    expect(job(s, 1, 'serve')?.history).toEqual(['RUNNING', 'KILLED', 'STARTING', 'RUNNING']);
  });

  it('models and their versions, newest version first; stage buttons follow the allowed transitions', () => {
    let s = reduce(initialState(), { type: 'models', models: [{ name: 'ctr' }, 'abc'] });
    s = reduce(s, {
      type: 'versions',
      model: 'ctr',
      versions: [{ version: 1, stage: 'DEPLOYED', uri: 'u1' }, { version: 2, stage: 'GENERATED', metrics: { auc: 0.9 } }]
    });
    expect(s.models.map(m => m.name)).toEqual(['abc', 'ctr']);
    expect(s.models[1].versions.map(v => [v.version, v.stage])).toEqual([[2, 'GENERATED'], [1, 'DEPLOYED']]);
    // a refreshed model list keeps the versions already loaded
    s = reduce(s, { type: 'models', models: { models: [{ name: 'ctr' }] } });
    expect(s.models[0].versions).toHaveLength(2);
    expect(nextStages('GENERATED')).toEqual(['VALIDATED', 'DEPLOYED', 'DEPRECATED']);
    expect(nextStages('DELETED')).toEqual([]);
  });

  it('groups runs by workflow and finds the active run', () => {
    const s = reduce(initialState(), {
      type: 'runs',
      runs: [
        { id: 5, workflow: 'a', status: 'FINISHED' },
        { id: 4, workflow: 'b', status: 'RUNNING', project: 'p' },
        { id: 3, workflow: 'a', status: 'RUNNING' }
      ]
    });
    expect(byWorkflow(s).map(g => [g.workflow, g.runs.map(r => r.id)])).toEqual([['a', [5, 3]], ['p/b', [4]]]);
    expect(activeRun(s)?.id).toBe(4);
  });

  it('answers of an unexpected shape give an empty list, not an exception', () => {
    expect(reduce(initialState(), { type: 'runs', runs: { error: 'x' } }).runs).toEqual([]);
    expect(reduce(initialState(), { type: 'events', events: null }).events).toEqual([]);
  });
});
