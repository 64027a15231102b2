/**
 * The one place bus events enter the page. The sidebar plugin feeds it from jupyter_server's event
 * stream; the MIME renderer (same bundle, same module instance) listens to it so a graph drawn in a cell
 * follows its run live without a connection of its own.
 */
import { Signal } from '@lumino/signaling';
import { IBusEvent, normaliseEvent } from './model';

export const BUS_SCHEMA = 'https://aiflow-notebook.github.io/events/bus-event';

class LiveHub {
  readonly events = new Signal<this, IBusEvent>(this);
  connected = false;

  /** Hands on an emission of jupyter_server's event bus if it is one of ours. */
  accept(emission: { schema_id: string; [k: string]: any }): IBusEvent | null {
    if (emission.schema_id !== BUS_SCHEMA) {
      return null;
    }
    this.connected = true;
    const event = normaliseEvent(emission);
    this.events.emit(event);
    return event;
  }
}

export const liveHub = new LiveHub();
