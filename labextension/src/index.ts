/**
 * The aiflow-notebook JupyterLab extension: the "AI Flow" sidebar, its palette commands, and the feed of
 * bus events from jupyter_server's event bus (the server extension forwards our bus there).
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget, Notification } from '@jupyterlab/apputils';
import { LabIcon } from '@jupyterlab/ui-components';
import { requestAPI } from './api';
import { lineageGraph } from './graph';
import { GraphView } from './graphview';
import { liveHub } from './live';
import magicHighlight from './magic';
import { AIFlowSidebar } from './sidebar';

export const aiflowIcon = new LabIcon({
  name: 'aiflow-notebook:icon',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" viewBox="0 0 24 24"><g class="jp-icon3" fill="#616161">' +
    '<circle cx="5" cy="6" r="3"/><circle cx="19" cy="6" r="3"/><circle cx="12" cy="18" r="3"/>' +
    '<path d="M7 7.5l4 8 1.6-.8-4-8zM17 7.5l-4 8-1.6-.8 4-8zM8 5h8v2H8z"/></g></svg>'
});

const COMMANDS = {
  refresh: 'aiflow:refresh',
  stopRun: 'aiflow:stop-run',
  openLineage: 'aiflow:open-lineage',
  show: 'aiflow:show-sidebar'
};

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'aiflow-notebook:sidebar',
  description: 'AI Flow sidebar: workflows, runs, jobs, events and model versions, live.',
  autoStart: true,
  optional: [ICommandPalette, ILayoutRestorer],
  activate: (app: JupyterFrontEnd, palette: ICommandPalette | null, restorer: ILayoutRestorer | null) => {
    const sidebar = new AIFlowSidebar();
    sidebar.title.icon = aiflowIcon;
    app.shell.add(sidebar, 'left', { rank: 850 });
    restorer?.add(sidebar, 'aiflow-sidebar');

    app.serviceManager.events.stream.connect((_, emission) => {
      liveHub.accept(emission);
    });

    app.commands.addCommand(COMMANDS.show, {
      label: 'AI Flow: Show Sidebar',
      execute: () => app.shell.activateById(sidebar.id)
    });
    app.commands.addCommand(COMMANDS.refresh, {
      label: 'AI Flow: Refresh',
      execute: () => sidebar.refresh()
    });
    app.commands.addCommand(COMMANDS.stopRun, {
      label: () => {
        const run = sidebar.selectedRun;
        return run ? `AI Flow: Stop Run ${run.id} (${run.workflow})` : 'AI Flow: Stop Run';
      },
      isEnabled: () => sidebar.selectedRun !== undefined,
      execute: async () => {
        const run = sidebar.selectedRun;
        if (run) {
          await sidebar.stopRun(run.id);
        }
      }
    });
    app.commands.addCommand(COMMANDS.openLineage, {
      label: () => {
        const v = sidebar.selectedVersion;
        return v ? `AI Flow: Open Lineage of ${v.model} v${v.version}` : 'AI Flow: Open Lineage';
      },
      isEnabled: () => sidebar.selectedVersion !== undefined,
      execute: async () => {
        const v = sidebar.selectedVersion;
        if (!v) {
          return;
        }
        const title = `${v.model} v${v.version}`;
        try {
          const data = await requestAPI(`lineage/${encodeURIComponent(v.model)}/${v.version}`);
          const view = new GraphView();
          view.graph = lineageGraph(data, `Lineage of ${title}`);
          const widget = new MainAreaWidget({ content: view });
          widget.id = `aiflow-lineage-${v.model}-${v.version}`;
          widget.title.label = `Lineage: ${title}`;
          widget.title.icon = aiflowIcon;
          widget.title.closable = true;
          app.shell.add(widget, 'main');
        } catch (error: any) {
          Notification.error(`Lineage of ${title}: ${error.message ?? error}`, { autoClose: 10_000 });
        }
      }
    });
    if (palette) {
      for (const command of Object.values(COMMANDS)) {
        palette.addItem({ command, category: 'AI Flow' });
      }
    }
  }
};

export default [plugin, magicHighlight];
