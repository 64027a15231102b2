/** Calls to the server extension's REST API under `/aiflow/api/` (DESIGN §4.7). */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
  }
}

/** JSON from `/aiflow/api/<path>`; a non-2xx answer raises ApiError with the server's `error` text. */
export async function requestAPI<T = any>(
  path: string,
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, 'aiflow', 'api', path);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ApiError(`cannot reach the AI Flow server extension: ${error}`, 0);
  }
  const body = await response.text();
  let data: any = body;
  try {
    data = body ? JSON.parse(body) : null;
  } catch {
    // a plain-text answer (a log) stays text
  }
  if (!response.ok) {
    const why = data && typeof data === 'object' && data.error ? data.error : response.statusText;
    throw new ApiError(`${init.method ?? 'GET'} ${path}: ${response.status} ${why}`, response.status);
  }
  return data as T;
}

export function post<T = any>(path: string, body: unknown = {}): Promise<T> {
  return requestAPI<T>(path, { method: 'POST', body: JSON.stringify(body) });
}

export function patch<T = any>(path: string, body: unknown): Promise<T> {
  return requestAPI<T>(path, { method: 'PATCH', body: JSON.stringify(body) });
}

/** The log text out of whatever shape `GET runs/<id>/jobs/<job>/log` answers with. */
export function logText(data: any): string {
  if (typeof data === 'string') {
    return data;
  }
  if (data && typeof data === 'object') {
    for (const key of ['log', 'text', 'tail', 'content']) {
      if (typeof data[key] === 'string') {
        return data[key];
      }
    }
    if (Array.isArray(data.lines)) {
      return data.lines.join('\n');
    }
  }
  return '';
}
