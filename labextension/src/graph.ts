/**
 * The workflow graph of an `application/vnd.aiflow.workflow+json` bundle (docs/workflow-mime.md): jobs
 * as boxes, data hand-offs as solid edges, control edges as dashed ones, laid out in layers.
 *
 * Pure functions only (no DOM): the Jest specs check the model and the layout.
 */
import { DEFAULT_PROJECT } from './model';

export const MIME_TYPE = 'application/vnd.aiflow.workflow+json';
/** The `project` of a lineage graph drawn with the workflow view. */
export const LINEAGE = '(lineage)';

export interface IGraphJob {
  name: string;
  engine: string;
  platform: string;
  parallelism: number;
  streaming: boolean;
  status: string | null;
  nodes: Array<{ name: string; kind: string }>;
  inputs: string[];
  outputs: string[];
}

export interface IGraphEdge {
  from: string;
  to: string;
  kind: 'data' | 'control';
  label: string;
}

export interface IGraph {
  workflow: string;
  project: string;
  runId: number | null;
  runStatus: string | null;
  jobs: IGraphJob[];
  edges: IGraphEdge[];
}

export interface IPlaced {
  name: string;
  x: number;
  y: number;
  width: number;
  height: number;
  layer: number;
}

export interface ILayout {
  width: number;
  height: number;
  boxes: IPlaced[];
  edges: Array<IGraphEdge & { points: Array<[number, number]> }>;
}

export class GraphFormatError extends Error {}

/** The graph of a bundle; throws GraphFormatError (with what was wrong) on something else. */
export function graphFromMime(data: unknown): IGraph {
  if (!data || typeof data !== 'object') {
    throw new GraphFormatError('the workflow bundle is not a JSON object');
  }
  const d = data as any;
  if (typeof d.format === 'number' && d.format > 1) {
    // A newer writer: fields we know keep their meaning, so carry on (docs/workflow-mime.md).
  }
  if (!Array.isArray(d.jobs)) {
    throw new GraphFormatError('the workflow bundle has no "jobs" list');
  }
  const jobs: IGraphJob[] = d.jobs.map((j: any) => ({
    name: String(j.name),
    engine: String(j.engine ?? 'python'),
    platform: String(j.platform ?? 'local'),
    parallelism: Number(j.parallelism ?? 1),
    streaming: Boolean(j.streaming),
    status: j.status ?? null,
    nodes: Array.isArray(j.nodes) ? j.nodes.map((n: any) => ({ name: String(n.name), kind: String(n.kind ?? '') })) : [],
    inputs: Array.isArray(j.inputs) ? j.inputs.map(String) : [],
    outputs: Array.isArray(j.outputs) ? j.outputs.map(String) : []
  }));
  const names = new Set(jobs.map(j => j.name));
  const edges: IGraphEdge[] = [];
  for (const ds of Array.isArray(d.datasets) ? d.datasets : []) {
    if (names.has(ds.from_job) && names.has(ds.to_job)) {
      edges.push({ from: ds.from_job, to: ds.to_job, kind: 'data', label: String(ds.dataset ?? '') });
    }
  }
  for (const ce of Array.isArray(d.control_edges) ? d.control_edges : []) {
    // upstream: one job, a list of jobs (all must finish: upstream=[a, b]) or null (an event rule)
    const upstreams: unknown[] = Array.isArray(ce.upstream) ? ce.upstream : [ce.upstream];
    for (const upstream of upstreams) {
      if (typeof upstream === 'string' && names.has(upstream) && names.has(ce.job)) {
        edges.push({ from: upstream, to: ce.job, kind: 'control', label: String(ce.label ?? ce.action ?? '') });
      }
    }
  }
  return {
    workflow: String(d.workflow ?? ''),
    project: String(d.project ?? DEFAULT_PROJECT),
    runId: d.run_id === undefined || d.run_id === null ? null : Number(d.run_id),
    runStatus: d.run_status ?? null,
    jobs,
    edges
  };
}

/** The graph with one job's status changed (a live update); the same object when nothing changes. */
export function withJobStatus(graph: IGraph, job: string, status: string): IGraph {
  if (!graph.jobs.some(j => j.name === job && j.status !== status)) {
    return graph;
  }
  return { ...graph, jobs: graph.jobs.map(j => (j.name === job ? { ...j, status } : j)) };
}

/** The job an event key `<workflow>.<job>` names in this graph, if any. */
export function jobOfKey(graph: IGraph, key: string): string | undefined {
  const prefix = graph.workflow + '.';
  if (!key.startsWith(prefix)) {
    return undefined;
  }
  const name = key.slice(prefix.length);
  return graph.jobs.some(j => j.name === name) ? name : undefined;
}

/**
 * Layers by longest path from the sources (edges that would close a cycle are ignored), jobs in a layer
 * in the workflow's order; left to right.
 */
export function layout(
  graph: { jobs: Array<{ name: string }>; edges: Array<{ from: string; to: string }> },
  box = { width: 190, height: 52, gapX: 160, gapY: 24, margin: 16 }
): ILayout {
  const order = graph.jobs.map(j => j.name);
  const layer = new Map<string, number>(order.map(n => [n, 0]));
  const index = new Map(order.map((n, i) => [n, i]));
  // Forward edges in the topological order given by the workflow; a back edge does not push layers.
  const forward = graph.edges.filter(
    e => index.has(e.from) && index.has(e.to) && index.get(e.from)! < index.get(e.to)!
  );
  for (const name of order) {
    for (const e of forward) {
      if (e.from === name) {
        layer.set(e.to, Math.max(layer.get(e.to)!, layer.get(name)! + 1));
      }
    }
  }
  const columns: string[][] = [];
  for (const name of order) {
    const l = layer.get(name)!;
    (columns[l] = columns[l] ?? []).push(name);
  }
  const boxes: IPlaced[] = [];
  const rows = Math.max(1, ...columns.map(c => c?.length ?? 0));
  columns.forEach((column, l) => {
    const offset = ((rows - column.length) * (box.height + box.gapY)) / 2;
    column.forEach((name, i) => {
      boxes.push({
        name,
        layer: l,
        width: box.width,
        height: box.height,
        x: box.margin + l * (box.width + box.gapX),
        y: box.margin + offset + i * (box.height + box.gapY)
      });
    });
  });
  const at = new Map(boxes.map(b => [b.name, b]));
  const edges = (graph.edges as Array<IGraphEdge>)
    .filter(e => at.has(e.from) && at.has(e.to))
    .map(e => {
      const a = at.get(e.from)!;
      const b = at.get(e.to)!;
      const points: Array<[number, number]> =
        a.layer < b.layer
          ? [
              [a.x + a.width, a.y + a.height / 2],
              [b.x, b.y + b.height / 2]
            ]
          : [
              [a.x + a.width / 2, a.y + a.height],
              [b.x + b.width / 2, b.y + (a.y > b.y ? b.height : 0)]
            ];
      return { ...e, points };
    });
  const width = box.margin * 2 + Math.max(1, columns.length) * (box.width + box.gapX) - box.gapX;
  const height = box.margin * 2 + rows * (box.height + box.gapY) - box.gapY;
  return { width, height, boxes, edges };
}

/** The CSS class of a status (colours in style/index.css). */
export function statusClass(status: string | null | undefined): string {
  return `aiflow-status-${(status ?? 'none').toLowerCase()}`;
}

/**
 * A lineage answer (`GET lineage/<model>/<version>`: nodes with an id and a kind, edges between them) as
 * a graph the same view can draw: each node a box (its kind where a job shows its engine).
 */
export function lineageGraph(data: unknown, title: string): IGraph {
  const d = (data ?? {}) as any;
  const rawNodes: any[] = Array.isArray(d.nodes) ? d.nodes : [];
  const rawEdges: any[] = Array.isArray(d.edges) ? d.edges : [];
  const idOf = (n: any): string => String(n.key ?? n.id ?? n.name); // edges name nodes by key
  const label = new Map<string, string>();
  for (const n of rawNodes) {
    const kind = String(n.kind ?? n.type ?? '');
    const name = String(n.label ?? n.name ?? idOf(n));
    label.set(idOf(n), kind && !name.startsWith(kind) ? `${kind}: ${name}` : name);
  }
  const end = (e: any, ...names: string[]): string => {
    for (const k of names) {
      if (e[k] !== undefined) {
        return typeof e[k] === 'object' ? idOf(e[k]) : String(e[k]);
      }
    }
    return '';
  };
  const edges: IGraphEdge[] = rawEdges
    .map(e => ({
      from: label.get(end(e, 'src', 'source', 'from')) ?? '',
      to: label.get(end(e, 'dst', 'target', 'to')) ?? '',
      kind: 'data' as const,
      label: String(e.relation ?? e.label ?? '')
    }))
    .filter(e => e.from && e.to);
  const order = topoOrder([...label.values()], edges);
  const kindOf = new Map(rawNodes.map(n => [label.get(idOf(n))!, String(n.kind ?? n.type ?? '')]));
  return {
    workflow: title,
    project: LINEAGE,
    runId: null,
    runStatus: null,
    jobs: order.map(name => ({
      name,
      engine: kindOf.get(name) ?? '',
      platform: '',
      parallelism: 1,
      streaming: false,
      status: null,
      nodes: [],
      inputs: edges.filter(e => e.to === name).map(e => e.from),
      outputs: edges.filter(e => e.from === name).map(e => e.to)
    })),
    edges
  };
}

/** Kahn's order (sources first, ties in the given order); nodes on a cycle come last, in given order. */
export function topoOrder(names: string[], edges: Array<{ from: string; to: string }>): string[] {
  const indegree = new Map(names.map(n => [n, 0]));
  for (const e of edges) {
    if (indegree.has(e.to) && indegree.has(e.from)) {
      indegree.set(e.to, indegree.get(e.to)! + 1);
    }
  }
  const order: string[] = [];
  const ready = names.filter(n => indegree.get(n) === 0);
  while (ready.length) {
    const n = ready.shift()!;
    order.push(n);
    for (const e of edges) {
      if (e.from === n && indegree.has(e.to)) {
        const left = indegree.get(e.to)! - 1;
        indegree.set(e.to, left);
        if (left === 0) {
          ready.push(e.to);
        }
      }
    }
  }
  return [...order, ...names.filter(n => !order.includes(n))];
}
