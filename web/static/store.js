// What the app keeps on the device.
//
// - The sign-in (access token, refresh token, who) lives in localStorage under
//   `paddock.session`. localStorage is read synchronously, so the first screen draws
//   without waiting, and it is shared by every tab of the origin at once, which the
//   refresh-token rotation needs: a tab that finds a fresher token there (written by
//   another tab inside the same Web Lock) uses it instead of spending its own, which
//   the gateway would take for a stolen, reused token. IndexedDB would protect the
//   token no better: any script of the origin reads both, which is why the page runs
//   under a strict Content-Security-Policy and never builds markup from strings.
// - The outbox (prompts and follow-ups typed while offline) lives in IndexedDB: it
//   must survive a closed tab and keeps structured records in order.
// - Remembered projects and the last job options: localStorage.

const SESSION_KEY = 'paddock.session';
const PROJECTS_KEY = 'paddock.projects';
const PREFS_KEY = 'paddock.prefs';

function readJson(key, fallback) {
  try {
    const text = localStorage.getItem(key);
    return text ? JSON.parse(text) : fallback;
  } catch {
    return fallback;
  }
}

function writeJson(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch {
    // Private mode or a full disk: the app still works for this page's life.
  }
}

/** The stored sign-in: {access, accessExp, refresh, refreshExp, user, scopes, deviceId, admin}. */
export function loadSession() {
  const session = readJson(SESSION_KEY, null);
  return session && session.refresh ? session : null;
}

export function saveSession(session) {
  writeJson(SESSION_KEY, session);
}

export function clearSession() {
  try {
    localStorage.removeItem(SESSION_KEY);
  } catch {
    // nothing stored
  }
}

/** The session from a token answer (login, refresh, device grant). */
export function sessionFromTokens(tokens, previous) {
  return {
    access: tokens.access_token,
    accessExp: Date.now() + tokens.expires_in * 1000,
    refresh: tokens.refresh_token,
    refreshExp: tokens.refresh_expires_at_ms,
    user: tokens.user,
    scopes: tokens.scopes,
    deviceId: tokens.device_id,
    admin: previous?.admin ?? (Array.isArray(tokens.scopes) && tokens.scopes.includes('users:admin')),
  };
}

/** Projects used before, most recent first. */
export function projects() {
  return readJson(PROJECTS_KEY, []);
}

export function rememberProject(name) {
  const list = [name, ...projects().filter((p) => p !== name)].slice(0, 12);
  writeJson(PROJECTS_KEY, list);
}

export function prefs() {
  return readJson(PREFS_KEY, { approval: true, keepOpen: false });
}

export function savePrefs(value) {
  writeJson(PREFS_KEY, value);
}

// ---- IndexedDB: the outbox ----

let database = null;

function open() {
  if (database) return database;
  database = new Promise((resolve, reject) => {
    const request = indexedDB.open('paddock', 1);
    request.onupgradeneeded = () => {
      request.result.createObjectStore('outbox', { keyPath: 'id' });
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  return database;
}

async function transact(mode, work) {
  const db = await open();
  return new Promise((resolve, reject) => {
    const tx = db.transaction('outbox', mode);
    const result = work(tx.objectStore('outbox'));
    tx.oncomplete = () => resolve(result.result);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

/** Every queued item, oldest first. */
export async function outboxAll() {
  const items = await transact('readonly', (store) => store.getAll());
  return (items ?? []).sort((a, b) => a.at - b.at);
}

export function outboxPut(item) {
  return transact('readwrite', (store) => store.put(item));
}

export function outboxDelete(id) {
  return transact('readwrite', (store) => store.delete(id));
}
