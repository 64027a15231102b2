/**
 * Colours the `%%aiflow` / `%aiflow` magic lines of code cells: the magic, its subcommand and its
 * `--options`, so a notebook's execution blocks stand out from the Python around them.
 */
import { EditorExtensionRegistry, IEditorExtensionRegistry } from '@jupyterlab/codemirror';
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Decoration, DecorationSet, EditorView, MatchDecorator, ViewPlugin, ViewUpdate } from '@codemirror/view';

const magic = Decoration.mark({ class: 'aiflow-magic' });
const command = Decoration.mark({ class: 'aiflow-magic-command' });
const option = Decoration.mark({ class: 'aiflow-magic-option' });

const matcher = new MatchDecorator({
  regexp: /^(%%?aiflow)\b([ \t]+[A-Za-z_]\w*)?(.*)$/gm,
  decorate: (add, from, _to, match) => {
    add(from, from + match[1].length, magic);
    let at = from + match[1].length;
    if (match[2]) {
      add(at + match[2].length - match[2].trimStart().length, at + match[2].length, command);
      at += match[2].length;
    }
    const options = /--[\w-]+/g;
    for (let m = options.exec(match[3] ?? ''); m; m = options.exec(match[3] ?? '')) {
      add(at + m.index, at + m.index + m[0].length, option);
    }
  }
});

const highlighter = ViewPlugin.fromClass(
  class {
    decorations: DecorationSet;
    constructor(view: EditorView) {
      this.decorations = matcher.createDeco(view);
    }
    update(update: ViewUpdate) {
      this.decorations = matcher.updateDeco(update, this.decorations);
    }
  },
  { decorations: v => v.decorations }
);

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'aiflow-notebook:magic-highlight',
  description: 'Colours %%aiflow magic lines in code cells.',
  autoStart: true,
  requires: [IEditorExtensionRegistry],
  activate: (_app: JupyterFrontEnd, registry: IEditorExtensionRegistry) => {
    registry.addExtension({
      name: 'aiflow-notebook:magic-highlight',
      factory: () => EditorExtensionRegistry.createImmutableExtension(highlighter)
    });
  }
};

export default plugin;
