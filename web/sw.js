// Paddock's service worker: the app shell works offline, and Web Push notifications
// are shown and opened here.
//
// The gateway writes the digest of all the app's files in place of the version mark
// below, so any change to any file makes this script change, which installs a fresh
// cache of the whole shell; old caches are dropped when it activates. Files are
// served from the cache of this version (never a mix of two versions); the API
// (`/v1/…`) is never cached or touched.

const VERSION = '__PADDOCK_WEB_VERSION__';
const CACHE = `paddock-shell-${VERSION}`;
const SHELL = [
  '/',
  '/manifest.webmanifest',
  '/static/app.css',
  '/static/app.js',
  '/static/api.js',
  '/static/diff.js',
  '/static/dom.js',
  '/static/live.js',
  '/static/markdown.js',
  '/static/outbox.js',
  '/static/push.js',
  '/static/render.js',
  '/static/session.js',
  '/static/store.js',
  '/static/views.js',
  '/static/icons/icon-192.png',
  '/static/icons/icon-512.png',
  '/static/icons/badge-72.png',
];
const JOB_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    await cache.addAll(SHELL.map((path) => new Request(path, { cache: 'no-cache' })));
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith('paddock-shell-') && name !== CACHE) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET') return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (url.pathname.startsWith('/v1/') || url.pathname.startsWith('/.well-known/')
    || url.pathname === '/healthz' || url.pathname === '/readyz' || url.pathname === '/sw.js') {
    return;
  }
  // Every page of the app is the same shell.
  const key = request.mode === 'navigate' ? '/' : url.pathname;
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    const cached = await cache.match(key);
    if (cached) return cached;
    const response = await fetch(request);
    if (response.ok && SHELL.includes(key)) await cache.put(key, response.clone());
    return response;
  })());
});

self.addEventListener('push', (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch {
    data = { title: 'Paddock', body: event.data ? event.data.text() : '' };
  }
  const job = typeof data.job_id === 'string' && JOB_ID.test(data.job_id) ? data.job_id : null;
  const title = typeof data.title === 'string' && data.title ? data.title : 'Paddock';
  event.waitUntil(self.registration.showNotification(title, {
    body: typeof data.body === 'string' ? data.body : '',
    tag: job ? `job-${job}` : 'paddock',
    renotify: data.kind === 'approval',
    requireInteraction: data.kind === 'approval',
    icon: '/static/icons/icon-192.png',
    badge: '/static/icons/badge-72.png',
    data: { job_id: job, kind: data.kind },
  }));
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const job = event.notification.data?.job_id;
  const url = job && JOB_ID.test(job) ? `/jobs/${job}` : '/';
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
    for (const client of windows) {
      if (new URL(client.url).origin !== self.location.origin) continue;
      await client.focus();
      client.postMessage({ type: 'open', url });
      return;
    }
    await self.clients.openWindow(url);
  })());
});
