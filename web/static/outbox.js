// Prompts and follow-ups typed without a connection wait in IndexedDB and are sent,
// in the order typed, when the gateway can be reached again (the browser says it is
// online, the live socket opens, the app starts, or every 15 s while items wait).
//
// A new prompt carries a client-chosen job id (a UUID v7), which makes
// `POST /v1/jobs` idempotent: sending it twice queues one job. A follow-up
// (`POST /v1/jobs/{id}/messages`) has no such key in the API, so when its request
// failed without an answer it may have arrived: before sending it again the job's
// events after the point it was typed are searched for the same text from this
// user, and it is not sent twice if found.

import { ApiError, Offline, api } from './api.js';
import { loadSession, outboxAll, outboxDelete, outboxPut } from './store.js';

/** Announces 'change' (the queue changed) and 'sent' / 'failed' with the item in detail. */
export const outbox = new EventTarget();

const RETRY_MS = 15_000;
let running = null;
let again = false;
let timer = 0;

function changed() {
  outbox.dispatchEvent(new Event('change'));
}

/** Queues an item: {kind: 'submit', job_id, body} or {kind: 'message', job_id, text, after_seq}. */
export async function enqueue(item) {
  const stored = { ...item, id: item.id ?? crypto.randomUUID(), at: Date.now(), attempted: false };
  await outboxPut(stored);
  changed();
  flush();
  return stored;
}

export async function discard(id) {
  await outboxDelete(id);
  changed();
}

export async function pending() {
  try {
    return await outboxAll();
  } catch {
    return [];
  }
}

/** Did an earlier, unanswered attempt of this follow-up reach the job? */
async function alreadyDelivered(item) {
  const session = loadSession();
  const page = await api('GET', `/v1/jobs/${item.job_id}/events?after_seq=${item.after_seq ?? 0}`);
  return (page.events ?? []).some((event) => event.kind === 'user.message'
    && event.text === item.text && (!session || event.by === session.user));
}

async function deliver(item) {
  if (item.kind === 'submit') {
    return api('POST', '/v1/jobs', item.body);
  }
  if (item.attempted && await alreadyDelivered(item)) {
    return { job_id: item.job_id, resumed: false, duplicate: true };
  }
  return api('POST', `/v1/jobs/${item.job_id}/messages`, { text: item.text });
}

async function run() {
  const items = await pending();
  for (const item of items) {
    if (!navigator.onLine) break;
    try {
      const result = await deliver(item);
      await outboxDelete(item.id);
      outbox.dispatchEvent(new CustomEvent('sent', { detail: { item, result } }));
      changed();
    } catch (error) {
      if (error instanceof Offline) {
        if (!item.attempted) await outboxPut({ ...item, attempted: true });
        break;
      }
      const retry = error instanceof ApiError
        && (error.status >= 500 || error.status === 429 || error.status === 401
          || error.code === 'node_gone' || (error.status === 409 && item.kind === 'message'));
      if (retry) break;
      // Refused for good (bad request, unknown project, quota…): tell, and drop it.
      await outboxDelete(item.id);
      outbox.dispatchEvent(new CustomEvent('failed', { detail: { item, error } }));
      changed();
    }
  }
  const left = await pending();
  clearTimeout(timer);
  if (left.length > 0) timer = setTimeout(flush, RETRY_MS);
}

/** Sends what waits, once at a time. */
export function flush() {
  if (!loadSession() || !navigator.onLine) return Promise.resolve();
  if (running) {
    again = true;
    return running;
  }
  running = run().finally(() => {
    running = null;
    if (again) {
      again = false;
      flush();
    }
  });
  return running;
}

addEventListener('online', () => flush());
