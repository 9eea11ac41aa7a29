// Live updates: Marathon's event stream (`/service/marathon/v2/events`, server-sent events
// through the router). Pages subscribe to change notifications; the shell shows a banner while
// the stream is down. EventSource reconnects by itself after a network error; a closed stream
// (e.g. a 401 or 503 answer) is reopened here after a pause.

const listeners = new Set();
const eventListeners = new Set();
const stateListeners = new Set();
let source = null;
let retry = null;
let connected = false;
let pending = null;

const RELEVANT = new Set([
  'status_update_event', 'instance_changed_event', 'deployment_info', 'deployment_success',
  'deployment_failed', 'deployment_step_success', 'deployment_step_failure', 'api_post_event',
  'app_terminated_event', 'health_status_changed_event', 'instance_health_changed_event',
  'failed_health_check_event', 'group_change_success', 'unhealthy_instance_kill_event',
]);

function setConnected(v) {
  if (connected === v) return;
  connected = v;
  for (const fn of stateListeners) fn(v);
}

function notify(type, data) {
  for (const fn of eventListeners) fn(type, data);
  // Coalesce bursts (a deployment sends several events at once) into one refresh.
  if (pending) return;
  pending = setTimeout(() => {
    pending = null;
    for (const fn of listeners) fn(type);
  }, 100);
}

export function start() {
  if (source) return;
  clearTimeout(retry);
  source = new EventSource('/service/marathon/v2/events', { withCredentials: true });
  source.onopen = () => setConnected(true);
  source.onerror = () => {
    setConnected(false);
    if (source && source.readyState === EventSource.CLOSED) {
      source = null;
      retry = setTimeout(start, 3000);
    }
  };
  const parse = (text) => {
    try {
      return JSON.parse(text);
    } catch {
      return null; // not JSON: only the type counts
    }
  };
  const onEvent = (e) => {
    setConnected(true);
    if (RELEVANT.has(e.type)) notify(e.type, parse(e.data));
  };
  for (const t of RELEVANT) source.addEventListener(t, onEvent);
  source.onmessage = (e) => {
    setConnected(true);
    const data = parse(e.data);
    if (RELEVANT.has(data?.eventType)) notify(data.eventType, data);
  };
}

export function stop() {
  clearTimeout(retry);
  source?.close();
  source = null;
  setConnected(false);
}

/** Calls `fn(eventType)` after relevant events; returns the unsubscribe function. */
export function onChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** Calls `fn(eventType, data)` at once for every relevant event (`data`: the event's JSON, or
 *  null); returns the unsubscribe function. For pages that update only what an event names. */
export function onEvent(fn) {
  eventListeners.add(fn);
  return () => eventListeners.delete(fn);
}

/** Calls `fn(connected)` when the stream goes up or down. */
export function onState(fn) {
  stateListeners.add(fn);
  return () => stateListeners.delete(fn);
}

export const isConnected = () => connected;
