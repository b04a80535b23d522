// Paddock's web app: the router, the bar at the top, and start-up. Screens are in
// views.js (sign-in, sessions, new session, nodes, settings, device approval) and
// session.js (one job, live). The gateway answers every page's path with the same
// shell (index.html); this module draws the screen the path names.

import { auth } from './api.js';
import { clear, h, toast } from './dom.js';
import { Live } from './live.js';
import { flush, outbox, pending } from './outbox.js';
import { jobView } from './session.js';
import { loadSession } from './store.js';
import * as views from './views.js';

const ROUTES = [
  [/^\/(index\.html)?$/, views.sessions],
  [/^\/signin$/, views.signin],
  [/^\/new$/, views.newSession],
  [/^\/jobs\/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/i, jobView],
  [/^\/nodes$/, views.nodes],
  [/^\/settings$/, views.settings],
  [/^\/device$/, views.device],
];

/** Paths that need no sign-in. */
const PUBLIC = new Set(['/signin']);

const main = document.getElementById('main');
const live = new Live();
let cleanup = null;
let generation = 0;

function setTitle(title, back) {
  document.getElementById('title').textContent = title;
  document.title = title === 'Paddock' ? 'Paddock' : `${title} · Paddock`;
  const link = document.getElementById('back');
  link.hidden = !back;
  if (back) link.setAttribute('href', back);
}

function showChrome() {
  const session = loadSession();
  document.getElementById('menu').hidden = !session;
  const admin = Boolean(session && (session.admin
    || (Array.isArray(session.scopes) && session.scopes.includes('nodes:admin'))));
  document.getElementById('nav-nodes').hidden = !admin;
}

export function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  route();
}

async function route() {
  const current = ++generation;
  if (cleanup) {
    try {
      cleanup();
    } catch {
      // a screen that fails to clean up must not block the next one
    }
    cleanup = null;
  }
  const { pathname, search } = location;
  const query = new URLSearchParams(search);
  if (!loadSession() && !PUBLIC.has(pathname)) {
    const next = pathname + search;
    history.replaceState(null, '', `/signin${next === '/' ? '' : `?next=${encodeURIComponent(next)}`}`);
    return route();
  }
  showChrome();
  const found = ROUTES.map(([pattern, view]) => [pattern.exec(pathname), view])
    .find(([match]) => match);
  clear(main);
  window.scrollTo(0, 0);
  if (!found) {
    setTitle('Not found', '/');
    main.appendChild(h('p', { class: 'center muted' }, 'There is no such page.'));
    return;
  }
  const [match, view] = found;
  const context = {
    main, live, navigate, setTitle, query, params: match.slice(1),
    alive: () => current === generation,
  };
  try {
    const done = await view(context);
    if (current === generation) cleanup = typeof done === 'function' ? done : null;
    else if (typeof done === 'function') done();
  } catch (error) {
    if (current !== generation) return;
    main.appendChild(h('p', { class: 'error center' }, `This screen failed: ${error.message}`));
  }
  if (!document.documentElement.dataset.ready) {
    document.documentElement.dataset.ready = '1';
    performance.mark('paddock-ready');
  }
}

// ---- the connection indicator ----

async function showNetwork() {
  const el = document.getElementById('net');
  const queued = (await pending()).length;
  let text = '';
  let kind = '';
  if (!navigator.onLine) {
    text = 'offline';
    kind = 'offline';
  } else if (live.state === 'connecting') {
    text = 'reconnecting…';
    kind = 'connecting';
  } else if (live.state === 'open') {
    text = 'live';
    kind = 'open';
  }
  if (queued > 0) text = `${text ? `${text} · ` : ''}${queued} queued`;
  el.textContent = text;
  el.className = `net ${kind}`;
  el.dataset.state = live.state;
  el.dataset.queued = String(queued);
}

live.addEventListener('state', showNetwork);
live.addEventListener('open', () => flush());
outbox.addEventListener('change', showNetwork);
outbox.addEventListener('failed', (event) => {
  const { item, error } = event.detail;
  const what = item.kind === 'submit' ? 'A queued prompt' : 'A queued follow-up';
  toast(`${what} was refused: ${error.message}`, { ms: 8000 });
});
addEventListener('online', showNetwork);
addEventListener('offline', showNetwork);

// ---- start ----

auth.addEventListener('signed-out', () => {
  live.subscriptions.clear();
  live.dropSocket('idle');
  if (location.pathname !== '/signin') {
    toast('Signed out: please sign in again.');
    navigate(`/signin?next=${encodeURIComponent(location.pathname + location.search)}`, { replace: true });
  }
});

document.addEventListener('click', (event) => {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey
    || event.shiftKey || event.altKey) return;
  const link = event.target.closest?.('a[href]');
  if (!link || link.target || link.hasAttribute('download')) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith('/v1/')) return;
  event.preventDefault();
  if (url.pathname + url.search !== location.pathname + location.search) {
    navigate(url.pathname + url.search);
  }
});

addEventListener('popstate', route);

if ('serviceWorker' in navigator) {
  navigator.serviceWorker.addEventListener('message', (event) => {
    if (event.data?.type === 'open' && typeof event.data.url === 'string'
      && event.data.url.startsWith('/')) {
      navigate(event.data.url);
    }
  });
  const register = () => navigator.serviceWorker.register('/sw.js', { scope: '/' }).catch(() => {});
  if (document.readyState === 'complete') register();
  else addEventListener('load', register);
  // A page first taken over by a worker is not an update; one whose worker changes is.
  let controlled = Boolean(navigator.serviceWorker.controller);
  let reloading = false;
  navigator.serviceWorker.addEventListener('controllerchange', () => {
    const update = controlled;
    controlled = true;
    if (reloading || !update) return;
    toast('A new version of Paddock is ready.', {
      action: 'Reload',
      onAction: () => { reloading = true; location.reload(); },
      ms: 15000,
    });
  });
}

route();
showNetwork();
flush();
