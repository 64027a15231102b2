import { graphFromMime, GraphFormatError, jobOfKey, layout, lineageGraph, topoOrder, withJobStatus } from '../graph';

const bundle = {
  format: 1,
  workflow: 'ctr',
  project: 'demo',
  run_id: 3,
  run_status: 'RUNNING',
  jobs: [
    { name: 'prep', engine: 'flink', platform: 'local', parallelism: 2, streaming: false, status: 'FINISHED',
      nodes: [{ name: 'featurize', kind: 'transform' }], inputs: ['clicks'], outputs: ['features'] },
    { name: 'train', engine: 'pytorch', streaming: false, status: 'RUNNING', inputs: ['features'], outputs: [] },
    { name: 'serve', engine: 'flink', streaming: true, status: null, inputs: ['click_stream'], outputs: ['scores'] }
  ],
  datasets: [{ dataset: 'features', from_job: 'prep', to_job: 'train' }],
  control_edges: [
    { job: 'train', action: 'START', upstream: 'prep', model: null, label: 'prep FINISHED' },
    { job: 'serve', action: 'RESTART', upstream: null, model: 'ctr', label: 'ctr MODEL_VALIDATED' }
  ],
  some_future_field: true
};

describe('graphFromMime', () => {
  it('reads jobs, data edges and control edges between jobs', () => {
    const g = graphFromMime(bundle);
    expect(g.workflow).toBe('ctr');
    expect(g.runId).toBe(3);
    expect(g.jobs.map(j => [j.name, j.status])).toEqual([['prep', 'FINISHED'], ['train', 'RUNNING'], ['serve', null]]);
    expect(g.jobs[2].streaming).toBe(true);
    expect(g.edges).toEqual([
      { from: 'prep', to: 'train', kind: 'data', label: 'features' },
      { from: 'prep', to: 'train', kind: 'control', label: 'prep FINISHED' }
    ]);
  });

  it('says what is wrong with a bundle it cannot draw', () => {
    expect(() => graphFromMime('nope')).toThrow(GraphFormatError);
    expect(() => graphFromMime({ workflow: 'x' })).toThrow(/no "jobs" list/);
  });

  it('draws one control edge from each job of an upstream list (upstream=[a, b])', () => {
    const g = graphFromMime({
      ...bundle,
      datasets: [],
      control_edges: [{ job: 'serve', action: 'START', upstream: ['prep', 'train'], model: null, label: 'FINISHED → START' }]
    });
    expect(g.edges.map(e => [e.from, e.to])).toEqual([['prep', 'serve'], ['train', 'serve']]);
  });

  it('a compiled workflow has no run', () => {
    const g = graphFromMime({ ...bundle, run_id: null, run_status: null });
    expect(g.runId).toBeNull();
  });

  it('live status updates change only the job named, and only when it changes', () => {
    const g = graphFromMime(bundle);
    expect(jobOfKey(g, 'ctr.train')).toBe('train');
    expect(jobOfKey(g, 'other.train')).toBeUndefined();
    expect(jobOfKey(g, 'ctr.nope')).toBeUndefined();
    const next = withJobStatus(g, 'train', 'FINISHED');
    expect(next.jobs.map(j => j.status)).toEqual(['FINISHED', 'FINISHED', null]);
    expect(g.jobs[1].status).toBe('RUNNING');
    expect(withJobStatus(next, 'train', 'FINISHED')).toBe(next);
  });
});

describe('layout', () => {
  it('puts a job right of the jobs it depends on, parallel jobs in one column', () => {
    const l = layout({
      jobs: [{ name: 'a' }, { name: 'b' }, { name: 'c' }, { name: 'd' }],
      edges: [{ from: 'a', to: 'b' }, { from: 'a', to: 'c' }, { from: 'b', to: 'd' }, { from: 'c', to: 'd' }]
    });
    const at = Object.fromEntries(l.boxes.map(b => [b.name, b]));
    expect([at.a.layer, at.b.layer, at.c.layer, at.d.layer]).toEqual([0, 1, 1, 2]);
    expect(at.b.x).toBe(at.c.x);
    expect(at.b.y).toBeLessThan(at.c.y);
    expect(at.d.x).toBeGreaterThan(at.b.x);
    for (const b of l.boxes) {
      expect(b.x + b.width).toBeLessThanOrEqual(l.width);
      expect(b.y + b.height).toBeLessThanOrEqual(l.height);
    }
    expect(l.edges).toHaveLength(4);
  });

  it('the longest path decides the layer, and a back edge does not loop', () => {
    const l = layout({
      jobs: [{ name: 'a' }, { name: 'b' }, { name: 'c' }],
      edges: [{ from: 'a', to: 'c' }, { from: 'a', to: 'b' }, { from: 'b', to: 'c' }, { from: 'c', to: 'a' }]
    });
    expect(l.boxes.map(b => b.layer)).toEqual([0, 1, 2]);
    expect(l.edges).toHaveLength(4);
  });

  it('draws a workflow without edges as one column', () => {
    const l = layout({ jobs: [{ name: 'x' }, { name: 'y' }], edges: [] });
    expect(new Set(l.boxes.map(b => b.x)).size).toBe(1);
  });
});

describe('lineage', () => {
  it('turns nodes and edges into a drawable graph in dependency order', () => {
    const g = lineageGraph(
      {
        // the server extension's shape: nodes named by key, edges by source/target keys
        nodes: [
          { key: 'model_version:3', id: 3, kind: 'model_version', label: 'ctr v1' },
          { key: 'dataset:1', id: 1, kind: 'dataset', label: 'features' },
          { key: 'job_run:7', id: 7, kind: 'job_run', label: 'train #7' }
        ],
        edges: [
          { source: 'dataset:1', target: 'job_run:7', relation: 'read_by' },
          { source: 'job_run:7', target: 'model_version:3', relation: 'produced' }
        ]
      },
      'Lineage of ctr v1'
    );
    expect(g.jobs.map(j => j.name)).toEqual(['dataset: features', 'job_run: train #7', 'model_version: ctr v1']);
    expect(g.edges.map(e => e.label)).toEqual(['read_by', 'produced']);
  });

  it('topoOrder keeps nodes on a cycle, last', () => {
    expect(topoOrder(['a', 'b', 'c'], [{ from: 'b', to: 'c' }, { from: 'c', to: 'b' }])).toEqual(['a', 'b', 'c']);
  });
});
