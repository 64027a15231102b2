/**
 * The renderer of `application/vnd.aiflow.workflow+json`: an interactive graph of the workflow (click a
 * job → its details; for a run, its attempts and log tail from the server extension), following the run
 * live through the page's bus events (live.ts).
 *
 * Rank 40 and `safe: true`: JupyterLab picks the renderer with the lowest rank among those the bundle
 * carries, and skips unsafe ones in untrusted notebooks. The SVG renderer has rank 80 (unsafe) and HTML
 * 50, so where this extension is installed the interactive graph wins, trusted or not; elsewhere (GitHub,
 * nbviewer, VS Code) the bundle's SVG, PNG or text is shown.
 */
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { PanelLayout, Widget } from '@lumino/widgets';
import { logText, requestAPI } from './api';
import { h } from './dom';
import { graphFromMime, GraphFormatError, IGraph, IGraphJob, jobOfKey, MIME_TYPE, withJobStatus } from './graph';
import { defaultDetails, GraphView, row } from './graphview';
import { liveHub } from './live';
import { FINAL_STATES, IBusEvent, JOB_STATUS_CHANGED, JobState, normaliseRun, RUN_STATUS_CHANGED } from './model';

export class WorkflowRenderer extends Widget implements IRenderMime.IRenderer {
  constructor(options: IRenderMime.IRendererOptions) {
    super();
    this.addClass('aiflow-workflow-renderer');
    this.layout = new PanelLayout();
    this.view = new GraphView((job, graph) => this.details(job, graph));
    (this.layout as PanelLayout).addWidget(this.view);
    liveHub.events.connect(this.onEvent, this);
  }

  async renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    let graph: IGraph;
    try {
      graph = graphFromMime(model.data[MIME_TYPE]);
    } catch (error) {
      const why = error instanceof GraphFormatError ? error.message : String(error);
      this.view.node.textContent = `Cannot draw this workflow: ${why}`;
      return;
    }
    this.view.graph = graph;
    this.liveJobs.clear();
    if (graph.runId !== null && !FINAL_STATES.includes(graph.runStatus ?? '')) {
      void this.catchUp(graph.runId);
    }
  }

  /**
   * The bundle is a snapshot from when the cell ran; what happened between then and now (a job that
   * started before this output was drawn) comes from the REST API once. Jobs a live event already moved
   * keep the event's state.
   */
  private async catchUp(runId: number): Promise<void> {
    let run;
    try {
      run = normaliseRun(await requestAPI(`runs/${runId}`));
    } catch {
      return; // no server extension (another viewer): the snapshot stays
    }
    let graph = this.view.graph;
    if (!graph || graph.runId !== runId) {
      return;
    }
    for (const job of run.jobs) {
      if (!this.liveJobs.has(job.name) && job.state !== JobState.INIT) {
        graph = withJobStatus(graph, job.name, job.state);
      }
    }
    if (FINAL_STATES.includes(run.status)) {
      graph = { ...graph, runStatus: run.status };
    }
    this.view.graph = graph;
  }

  dispose(): void {
    liveHub.events.disconnect(this.onEvent, this);
    super.dispose();
  }

  private onEvent(_: unknown, event: IBusEvent): void {
    const graph = this.view.graph;
    if (!graph || graph.runId === null || event.run_id !== graph.runId) {
      return;
    }
    if (event.event_type === JOB_STATUS_CHANGED) {
      const job = jobOfKey(graph, event.key);
      if (job) {
        this.liveJobs.add(job);
        this.view.graph = withJobStatus(graph, job, event.value);
      }
    } else if (event.event_type === RUN_STATUS_CHANGED && graph.runStatus !== event.value) {
      this.view.graph = { ...graph, runStatus: event.value };
    }
  }

  private details(job: IGraphJob, graph: IGraph): HTMLElement {
    const box = defaultDetails(job);
    if (graph.runId === null) {
      return box;
    }
    const more = h('div', { className: 'aiflow-run-details' }, 'loading the run…');
    box.appendChild(more);
    const runId = graph.runId;
    Promise.all([
      requestAPI(`runs/${runId}`),
      requestAPI(`runs/${runId}/jobs/${encodeURIComponent(job.name)}/log?tail=20`).catch(() => '')
    ])
      .then(([run, log]) => {
        const found = normaliseRun(run).jobs.find(j => j.name === job.name);
        more.textContent = '';
        if (found) {
          more.appendChild(
            h(
              'table',
              {},
              row('attempt', String(found.attempt)),
              row('started', found.startedAt ?? '—'),
              row('ended', found.endedAt ?? '—'),
              found.error ? row('error', found.error) : null
            )
          );
        }
        const tail = logText(log);
        more.appendChild(h('pre', { className: 'aiflow-log' }, tail || '(no log yet)'));
      })
      .catch(error => {
        more.textContent = `run details unavailable: ${error.message ?? error}`;
      });
    return box;
  }

  private view: GraphView;
  private liveJobs = new Set<string>(); // jobs whose state came from a live event
}

export const rendererFactory: IRenderMime.IRendererFactory = {
  safe: true,
  mimeTypes: [MIME_TYPE],
  defaultRank: 40,
  createRenderer: options => new WorkflowRenderer(options)
};

const extension: IRenderMime.IExtension = {
  id: 'aiflow-notebook:workflow-renderer',
  description: 'Interactive graph of an AI Flow workflow or run.',
  rendererFactory,
  rank: 40,
  dataType: 'json'
};

export default extension;
