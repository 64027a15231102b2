/** Draws a workflow graph (graph.ts) as SVG; a click on a job shows its details below the graph. */
import { Widget } from '@lumino/widgets';
import { h, s } from './dom';
import { IGraph, IGraphJob, layout, LINEAGE, statusClass } from './graph';

export class GraphView extends Widget {
  constructor(private details: (job: IGraphJob, graph: IGraph) => HTMLElement = defaultDetails) {
    super();
    this.addClass('aiflow-graph');
    this.node.addEventListener('click', this.onClick);
  }

  get graph(): IGraph | null {
    return this._graph;
  }

  set graph(graph: IGraph | null) {
    if (graph === this._graph) {
      return;
    }
    this._graph = graph;
    this.draw();
  }

  get selected(): string | null {
    return this._selected;
  }

  select(job: string | null): void {
    this._selected = job;
    this.draw();
  }

  dispose(): void {
    this.node.removeEventListener('click', this.onClick);
    super.dispose();
  }

  private onClick = (event: MouseEvent): void => {
    const box = (event.target as Element).closest('[data-job]');
    if (box && this.node.contains(box) && box.closest('svg')) {
      const job = box.getAttribute('data-job');
      this.select(job === this._selected ? null : job);
    }
  };

  private draw(): void {
    const graph = this._graph;
    this.node.textContent = '';
    if (!graph) {
      return;
    }
    const placed = layout(graph);
    const title =
      graph.runId !== null
        ? `${graph.workflow} · run ${graph.runId}${graph.runStatus ? ' · ' + graph.runStatus : ''}`
        : graph.project === LINEAGE
          ? graph.workflow
          : `${graph.workflow} (compiled, not submitted)`;
    const svg = s(
      'svg',
      { width: placed.width, height: placed.height, viewBox: `0 0 ${placed.width} ${placed.height}`, role: 'img' },
      s(
        'defs',
        {},
        s(
          'marker',
          { id: 'aiflow-arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto' },
          s('path', { d: 'M0,0 L10,5 L0,10 z', className: 'aiflow-arrowhead' })
        )
      ),
      placed.edges.map(e =>
        s(
          'g',
          { className: `aiflow-edge aiflow-edge-${e.kind}` },
          s('path', {
            d: `M${e.points[0][0]},${e.points[0][1]} L${e.points[1][0]},${e.points[1][1]}`,
            'marker-end': 'url(#aiflow-arrow)'
          }),
          s('text', {
            x: (e.points[0][0] + e.points[1][0]) / 2,
            y: (e.points[0][1] + e.points[1][1]) / 2 - 4,
            'text-anchor': 'middle'
          }, e.label)
        )
      ),
      placed.boxes.map(b => {
        const job = graph.jobs.find(j => j.name === b.name)!;
        return s(
          'g',
          {
            className: `aiflow-job-box ${statusClass(job.status)}${this._selected === b.name ? ' aiflow-selected' : ''}`,
            'data-job': b.name,
            'data-state': job.status ?? 'NONE',
            transform: `translate(${b.x},${b.y})`
          },
          s('rect', { width: b.width, height: b.height, rx: 6 }),
          s('title', {}, b.name),
          s('text', { x: b.width / 2, y: 20, 'text-anchor': 'middle', className: 'aiflow-job-name' }, fit(b.name, 24)),
          s(
            'text',
            { x: b.width / 2, y: 38, 'text-anchor': 'middle', className: 'aiflow-job-sub' },
            fit(`${job.engine}${job.streaming ? ' · streaming' : ''}${job.status ? ' · ' + job.status : ''}`, 30)
          )
        );
      })
    );
    this.node.appendChild(h('div', { className: 'aiflow-graph-title' }, title));
    this.node.appendChild(h('div', { className: 'aiflow-graph-canvas' }, svg));
    const chosen = graph.jobs.find(j => j.name === this._selected);
    if (chosen) {
      this.node.appendChild(this.details(chosen, graph));
    }
  }

  private _graph: IGraph | null = null;
  private _selected: string | null = null;
}

export function defaultDetails(job: IGraphJob): HTMLElement {
  return h(
    'div',
    { className: 'aiflow-job-details', 'data-details-for': job.name },
    h('div', { className: 'aiflow-details-title' }, `Job ${job.name}`),
    h(
      'table',
      {},
      row('status', job.status ?? 'not started'),
      row('engine', `${job.engine} on ${job.platform}, parallelism ${job.parallelism}`),
      row('kind', job.streaming ? 'streaming' : 'batch'),
      row('reads', job.inputs.join(', ') || '—'),
      row('writes', job.outputs.join(', ') || '—'),
      row('nodes', job.nodes.map(n => `${n.name} (${n.kind})`).join(', ') || '—')
    )
  );
}

export function row(label: string, value: string | Node): HTMLElement {
  return h('tr', {}, h('th', {}, label), h('td', {}, value));
}

/** Text cut to `max` characters (the full text is the box's tooltip). */
function fit(text: string, max: number): string {
  return text.length > max ? text.slice(0, max - 1) + '…' : text;
}
