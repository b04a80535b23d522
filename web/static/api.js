// The gateway's public API, as the CLI uses it: REST with a bearer access token.
// The access token is renewed with the refresh token shortly before it expires and
// once more when a request answers 401 (then the request is tried again, once).
// Refresh tokens rotate: each is good for one use, and using one twice ends the
// sign-in. So a refresh runs under a Web Lock shared by all tabs, and inside it the
// stored token is read again: if another tab has just rotated it, that answer is used.

import { clearSession, loadSession, saveSession, sessionFromTokens } from './store.js';

/** Announces 'signed-out' (the sign-in ended) to whoever listens. */
export const auth = new EventTarget();

/** A refusal from the API, with its stable code. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

/** The request never reached the gateway (or its answer never came back). */
export class Offline extends Error {
  constructor(cause) {
    super('no connection to the gateway');
    this.cause = cause;
  }
}

/** Renew this long before the access token expires. */
const EARLY_MS = 60_000;

async function errorOf(response) {
  let code = '';
  let message = '';
  try {
    const body = await response.json();
    code = body?.error?.code ?? '';
    message = body?.error?.message ?? '';
  } catch {
    // not JSON
  }
  return new ApiError(response.status, code, message);
}

async function send(method, path, body, token) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  try {
    return await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (error) {
    throw new Offline(error);
  }
}

function signOut() {
  clearSession();
  auth.dispatchEvent(new Event('signed-out'));
}

let refreshing = null;

/**
 * A fresh access token. `stale` is a token the gateway refused: unless storage
 * already holds a different, valid one, the refresh token is spent for a new pair.
 */
export function freshToken(stale) {
  const session = loadSession();
  if (!session) return Promise.reject(new ApiError(401, 'unauthorized', 'not signed in'));
  if (session.access !== stale && session.accessExp - Date.now() > EARLY_MS) {
    return Promise.resolve(session.access);
  }
  if (!refreshing) {
    const run = () => rotate(stale);
    const locked = navigator.locks ? navigator.locks.request('paddock-refresh', run) : run();
    refreshing = locked.finally(() => { refreshing = null; });
  }
  return refreshing;
}

async function rotate(stale) {
  const session = loadSession();
  if (!session) throw new ApiError(401, 'unauthorized', 'not signed in');
  if (session.access !== stale && session.accessExp - Date.now() > EARLY_MS) {
    return session.access; // another tab rotated while this one waited for the lock
  }
  const response = await send('POST', '/v1/auth/refresh', { refresh_token: session.refresh });
  if (response.ok) {
    const next = sessionFromTokens(await response.json(), session);
    saveSession(next);
    return next.access;
  }
  const error = await errorOf(response);
  if (response.status === 401) signOut();
  throw error;
}

/**
 * Calls the API. `auth: false` for the routes that take no token. Answers the parsed
 * JSON body (or null); throws ApiError for a refusal and Offline for no connection.
 */
export async function api(method, path, body, { auth: withToken = true } = {}) {
  let token = withToken ? await freshToken() : null;
  let response = await send(method, path, body, token);
  if (response.status === 401 && withToken) {
    token = await freshToken(token);
    response = await send(method, path, body, token);
    if (response.status === 401) {
      const error = await errorOf(response);
      signOut();
      throw error;
    }
  }
  if (!response.ok) throw await errorOf(response);
  if (response.status === 204) return null;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/** Signs in with a password (and a TOTP code when the account has one). */
export async function login(user, password, totp, deviceName) {
  const body = { user, password, device_name: deviceName };
  if (totp) body.totp = totp;
  const response = await send('POST', '/v1/auth/login', body);
  if (!response.ok) throw await errorOf(response);
  const session = sessionFromTokens(await response.json());
  saveSession(session);
  try {
    const me = await api('GET', '/v1/auth/me');
    saveSession({ ...loadSession(), admin: Boolean(me?.admin) });
  } catch {
    // the scopes from the login answer will do
  }
  return loadSession();
}

/** Ends this device's sign-in on the gateway (best effort) and here. */
export async function logout() {
  try {
    await api('POST', '/v1/auth/logout');
  } catch {
    // offline or already ended: the tokens are forgotten here anyway
  }
  signOut();
}

export function hasScope(scope) {
  const session = loadSession();
  return Boolean(session && Array.isArray(session.scopes) && session.scopes.includes(scope));
}
