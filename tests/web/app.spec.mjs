// The web app in headless Chromium (Debian's `chromium`, driven by playwright-core)
// against a running cluster with the real Claude Code CLI and the Messages API
// double. Started by tests/tests/web.rs, which passes:
//   PADDOCK_URL          the gateway, over HTTPS with the dev certificate `paddock up` makes
//   PADDOCK_CA_CERT      its CA: Chromium trusts it by public key, Node by NODE_EXTRA_CA_CERTS
//   PADDOCK_USER, PADDOCK_PASSWORD   the first admin
//   PADDOCK_SCREENSHOTS  where the phone-sized screenshots go (docs/screenshots)
//   PADDOCK_ARTIFACTS    where a failure's screenshot and page log go
//   PLAYWRIGHT_CORE      the installed playwright-core package (.tools/playwright)
//   CHROMIUM             the browser (default /usr/bin/chromium)
// The scripts the double plays are in web.rs; each scenario's prompt picks one.
// Prints one line per step and exits non-zero on the first failure.

import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const BASE = env('PADDOCK_URL');
const USER = env('PADDOCK_USER');
const PASSWORD = env('PADDOCK_PASSWORD');
const SHOTS = env('PADDOCK_SCREENSHOTS');
const ARTIFACTS = env('PADDOCK_ARTIFACTS');
const require = createRequire(path.join(env('PLAYWRIGHT_CORE'), 'package.json'));
const { chromium } = require('playwright-core');

const PHONE = { width: 360, height: 740 };
const LONG = 90_000;
const log = [];
let passed = 0;

function step(name) {
  passed += 1;
  console.log(`ok ${passed} - ${name}`);
}

/** The API as a second client (not the page): for checks and device grants. */
async function rest(method, route, body, token) {
  const response = await fetch(BASE + route, {
    method,
    headers: {
      ...(body ? { 'content-type': 'application/json' } : {}),
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

/** Polls `check` until it returns a truthy value; fails with `what` after `ms`. */
async function eventually(what, check, ms = LONG) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await check();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

async function noHorizontalOverflow(page, where) {
  const widths = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    client: document.documentElement.clientWidth,
    offenders: [...document.querySelectorAll('body *')]
      .filter((el) => el.getBoundingClientRect().right > document.documentElement.clientWidth + 1
        && !el.closest('pre, .table, .tool > summary .brief') && el.getClientRects().length)
      .slice(0, 5)
      .map((el) => `${el.tagName.toLowerCase()}.${el.className}`),
  }));
  assert.ok(widths.scroll <= widths.client,
    `${where}: the page is ${widths.scroll} px wide in a ${widths.client} px viewport (${widths.offenders.join(', ')})`);
}

/** Every event of the timeline, by seq: exactly 1..n, once each, in order. */
async function renderedSeqs(page) {
  return page.evaluate(() => ({
    all: [...document.querySelectorAll('#timeline [data-seq]')].map((el) => Number(el.dataset.seq)),
    top: [...document.querySelectorAll('#timeline > [data-seq]')].map((el) => Number(el.dataset.seq)),
  }));
}

async function assertEveryEventOnce(page, job, token) {
  const events = (await rest('GET', `/v1/jobs/${job}/events`, null, token)).body.events;
  const { all, top } = await renderedSeqs(page);
  const sorted = [...all].sort((a, b) => a - b);
  assert.deepEqual(sorted, events.map((e) => e.seq), 'every event is on the page exactly once');
  assert.deepEqual(top, [...top].sort((a, b) => a - b), 'the timeline is in sequence order');
  return events;
}

function jobOf(page) {
  const match = /\/jobs\/([0-9a-f-]{36})/.exec(page.url());
  assert.ok(match, `not on a job page: ${page.url()}`);
  return match[1];
}

async function startSession(page, prompt, { approval = false, keepOpen = false } = {}) {
  await page.click('#new');
  await page.waitForSelector('#new-session');
  await page.fill('input[name=project]', 'demo');
  await page.fill('textarea[name=prompt]', prompt);
  await page.setChecked('input[name=approval]', approval);
  await page.setChecked('input[name=keep-open]', keepOpen);
  await page.click('#new-session button[type=submit]');
  await page.waitForURL(/\/jobs\//);
  return jobOf(page);
}

async function home(page) {
  await page.click('.menu a[href="/"]');
  await page.waitForSelector('#jobs');
}

async function main() {
  mkdirSync(SHOTS, { recursive: true });
  mkdirSync(ARTIFACTS, { recursive: true });
  // The gateway's chain ends in the dev CA; Chromium accepts the chain by that CA's
  // public key, so the page is a secure context over real HTTPS (service worker, push).
  const args = [];
  if (process.env.PADDOCK_CA_CERT) {
    const ca = new X509Certificate(readFileSync(process.env.PADDOCK_CA_CERT));
    const spki = ca.publicKey.export({ type: 'spki', format: 'der' });
    args.push(`--ignore-certificate-errors-spki-list=${createHash('sha256').update(spki).digest('base64')}`);
  }
  const browser = await chromium.launch({ executablePath: env('CHROMIUM', '/usr/bin/chromium'), args });
  const context = await browser.newContext({
    viewport: PHONE, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
  });
  // Every page socket goes through this route, so the test can cut it like a network.
  const sockets = [];
  await context.routeWebSocket(/\/v1\/ws/, (ws) => {
    const server = ws.connectToServer();
    // Handling the page's close turns off its forwarding: forward it here.
    ws.onClose((code, reason) => {
      ws.closed = true;
      server.close({ code, reason });
    });
    sockets.push(ws);
  });
  const page = await context.newPage();
  page.on('console', (message) => log.push(`console.${message.type()}: ${message.text()}`));
  page.on('pageerror', (error) => log.push(`page error: ${error.stack || error}`));
  try {
    await scenarios(browser, context, page, sockets);
  } catch (error) {
    await page.screenshot({ path: path.join(ARTIFACTS, 'failure.png'), fullPage: true }).catch(() => {});
    writeFileSync(path.join(ARTIFACTS, 'page.log'), log.join('\n'));
    console.log(`not ok ${passed + 1} - ${error.stack || error}`);
    console.log(`page log (last 40 lines):\n${log.slice(-40).join('\n')}`);
    console.log(`screenshot: ${path.join(ARTIFACTS, 'failure.png')}`);
    await browser.close();
    process.exit(1);
  }
  await browser.close();
  console.log(`${passed} passed, 0 failed`);
}

async function scenarios(browser, context, page, sockets) {
  // ---- the first load, cold (nothing cached), then warm (the service worker) ----
  await page.goto(BASE);
  await page.waitForSelector('html[data-ready] #signin');
  const cold = await page.evaluate(() => {
    const nav = performance.getEntriesByType('navigation')[0];
    const ready = performance.getEntriesByName('paddock-ready')[0];
    return { load: nav.loadEventEnd || nav.duration, ready: ready?.startTime, bytes: nav.transferSize };
  });
  assert.ok(cold.ready > 0, 'the app marks when it has drawn its first screen');
  console.log(`# page load on loopback, cold: first screen drawn at ${cold.ready.toFixed(0)} ms, load event at ${cold.load.toFixed(0)} ms`);
  await eventually('the service worker to control the page', () =>
    page.evaluate(() => navigator.serviceWorker.ready.then(() => Boolean(navigator.serviceWorker.controller)) ));
  await page.reload();
  await page.waitForSelector('html[data-ready] #signin');
  const warm = await page.evaluate(() => performance.getEntriesByName('paddock-ready')[0]?.startTime);
  console.log(`# page load on loopback, warm (service worker cache): first screen drawn at ${warm.toFixed(0)} ms`);
  await noHorizontalOverflow(page, 'sign-in');
  step('the app loads, registers its service worker and asks to sign in');

  // ---- what the gateway sends with the app ----
  const shell = await fetch(`${BASE}/jobs/0190e0e0-0000-7000-8000-000000000000`);
  assert.equal(shell.status, 200);
  assert.match(shell.headers.get('content-type'), /^text\/html/);
  const csp = shell.headers.get('content-security-policy') ?? '';
  for (const rule of ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"]) {
    assert.ok(csp.includes(rule), `CSP has ${rule}: ${csp}`);
  }
  const etag = shell.headers.get('etag');
  assert.ok(etag, 'the shell has an ETag');
  assert.equal((await fetch(`${BASE}/`, { headers: { 'if-none-match': etag } })).status, 304);
  const module = await fetch(`${BASE}/static/app.js`);
  assert.match(module.headers.get('content-type'), /^text\/javascript/);
  assert.equal(module.headers.get('cache-control'), 'no-cache');
  const worker = await fetch(`${BASE}/sw.js`);
  assert.ok(!(await worker.text()).includes('__PADDOCK_WEB_VERSION__'), 'the worker names its version');
  assert.match((await fetch(`${BASE}/manifest.webmanifest`)).headers.get('content-type'), /manifest\+json/);
  for (const missing of ['/static/nope.js', '/v1/nope', '/nope']) {
    const answer = await fetch(BASE + missing);
    assert.equal(answer.status, 404, missing);
    assert.equal((await answer.json()).error.code, 'not_found', missing);
  }
  step('the gateway serves the shell for app paths, with ETags, a strict CSP and JSON 404s elsewhere');

  // ---- the Markdown renderer and the diff, on hostile and tricky input ----
  const unit = await page.evaluate(async () => {
    const { markdown } = await import('/static/markdown.js');
    const { diffLines } = await import('/static/diff.js');
    const box = document.createElement('div');
    box.appendChild(markdown([
      '# Title', '',
      '<script>alert(1)</script> <img src=x onerror=alert(1)> [bad](javascript:alert(1))',
      '[ok](https://example.com/a) **bold** _it_ `<b>code</b>` ~~old~~ https://example.org/x.', '',
      '| a | b |', '|---|--:|', '| 1 | 2 |', '',
      '1. one', '   - nested', '2. two', '',
      '> quoted', '',
      '```html', '<p>not markup</p>', '```',
    ].join('\n')));
    return {
      html: box.innerHTML,
      text: box.textContent,
      hrefs: [...box.querySelectorAll('a')].map((a) => a.getAttribute('href')),
      tags: [...new Set([...box.querySelectorAll('*')].map((el) => el.tagName.toLowerCase()))].sort(),
      diff: diffLines('a\nb\nc', 'a\nB\nc\nd').map((line) => line.op + line.text),
    };
  });
  assert.deepEqual(unit.hrefs, ['https://example.com/a', 'https://example.org/x']);
  assert.ok(!/<script|<img|<p>not/.test(unit.html), unit.html);
  assert.match(unit.text, /<script>alert\(1\)<\/script>/);
  assert.match(unit.text, /<p>not markup<\/p>/);
  for (const tag of ['h3', 'strong', 'em', 'code', 'del', 'table', 'ol', 'ul', 'blockquote', 'pre']) {
    assert.ok(unit.tags.includes(tag), `${tag} in ${unit.tags}`);
  }
  assert.ok(!unit.tags.includes('script') && !unit.tags.includes('img'));
  assert.deepEqual(unit.diff, [' a', '-b', '+B', ' c', '+d']);
  step('Markdown renders structure and keeps markup and unsafe links as text; diffs are minimal');

  // ---- signing in ----
  await page.fill('input[name=user]', USER);
  await page.fill('input[name=password]', 'not the password');
  await page.click('#signin button[type=submit]');
  await page.waitForSelector('#signin .error:not([hidden])');
  assert.match(await page.textContent('#signin .error'), /wrong/);
  await page.fill('input[name=password]', PASSWORD);
  await page.click('#signin button[type=submit]');
  await page.waitForSelector('#jobs');
  const session = await page.evaluate(() => JSON.parse(localStorage.getItem('paddock.session')));
  assert.equal(session.user, USER);
  assert.ok(session.refresh && session.access, 'tokens are kept');
  await noHorizontalOverflow(page, 'sessions');
  step('a wrong password is refused; the right one signs in');

  // A token of this test's own (a second device of the same user) for checks.
  const own = await rest('POST', '/v1/auth/login', { user: USER, password: PASSWORD, device_name: 'web test' });
  assert.equal(own.status, 200);
  const token = own.body.access_token;

  // ---- a prompt, its streamed answer as Markdown, a follow-up, cancel ----
  const hello = await startSession(page, 'say hello', { keepOpen: true });
  const answer = page.locator('#timeline .msg.assistant').first();
  await answer.waitFor({ timeout: LONG });
  assert.equal(await answer.locator('strong').textContent(), 'Paddock');
  assert.equal(await answer.locator('li').count(), 2);
  assert.match(await answer.locator('pre code').textContent(), /fn main/);
  assert.equal(await answer.locator('script, img, iframe').count(), 0, 'markup in the text stays text');
  assert.match(await answer.textContent(), /<img src=x onerror=alert\(1\)>/);
  await page.waitForSelector('#timeline [data-kind="turn.completed"]', { timeout: LONG });
  await noHorizontalOverflow(page, 'a session');
  step('a prompt runs and its answer streams in as Markdown, with markup shown as text');

  await page.fill('textarea[name=message]', 'and again');
  await page.click('#send');
  await page.waitForSelector('#timeline .msg.user >> text=and again', { timeout: LONG });
  await page.waitForSelector('#timeline .msg.assistant >> text=Hello again', { timeout: LONG });
  await page.click('#cancel');
  await page.click('#cancel');
  await page.waitForSelector('#timeline [data-kind="job.cancelled"]', { timeout: LONG });
  await assertEveryEventOnce(page, hello, token);
  assert.ok(await page.isHidden('#cancel'), 'an ended session cannot be cancelled');
  step('a follow-up gets its answer; cancel ends the session');

  // ---- approvals: allow one tool call, deny another ----
  await home(page);
  const approvals = await startSession(page, 'run two commands', { approval: true });
  const first = page.locator('#timeline .approval.pending').first();
  await first.waitFor({ timeout: LONG });
  assert.match(await first.textContent(), /Bash wants to run/);
  assert.match(await first.locator('pre.cmd').textContent(), /echo yes > allowed.txt/);
  assert.match(await first.locator('.countdown').textContent(), /denied in \d+:\d\d/);
  await noHorizontalOverflow(page, 'an approval card');
  await page.screenshot({ path: path.join(SHOTS, 'web-approval-360.png'), scale: 'css' });
  await first.locator('button.allow').click();
  await page.waitForSelector('#timeline .approval.allowed', { timeout: LONG });
  const second = page.locator('#timeline .approval.pending').first();
  await second.waitFor({ timeout: LONG });
  assert.match(await second.locator('pre.cmd').textContent(), /echo no > denied.txt/);
  await second.locator('button.deny').click();
  await page.waitForSelector('#timeline .approval.denied', { timeout: LONG });
  await page.waitForSelector('#timeline [data-kind="job.completed"]', { timeout: LONG });
  const resolved = await page.locator('#timeline [data-kind="approval.resolved"]').allTextContents();
  assert.deepEqual(resolved.map((t) => t.trim()), [`✓ allowed by ${USER}`, `⊘ denied by ${USER}`]);
  await assertEveryEventOnce(page, approvals, token);
  step('one tool call allowed and one denied from their cards');

  // ---- the connection cut mid-stream, twice: nothing missed, nothing doubled ----
  await home(page);
  const slow = await startSession(page, 'stream slowly');
  const shown = async () => (await renderedSeqs(page)).all.length;
  await eventually('a few streamed events', async () => (await shown()) >= 6);
  const socketsBefore = sockets.length;
  await context.setOffline(true);
  await page.waitForSelector('#net.offline');
  const cutAt = await shown();
  // The job goes on without the page: wait until it has written more than the page saw.
  await eventually('events written while the page is offline', async () => {
    const events = (await rest('GET', `/v1/jobs/${slow}/events`, null, token)).body.events;
    return events.length >= cutAt + 4;
  });
  assert.equal(await shown(), cutAt, 'nothing arrives while offline');
  await context.setOffline(false);
  await eventually('the page to catch up after the network returns', async () => (await shown()) >= cutAt + 4);
  // Now the socket dies under the page (as a proxy or a sleeping laptop would do it).
  const beforeClose = await shown();
  const open = sockets.filter((ws) => !ws.closed);
  assert.ok(open.length >= 1, 'the page has a live socket');
  for (const ws of open) {
    ws.closed = true;
    await ws.close({ code: 4000, reason: 'cut by the test' });
  }
  await page.waitForSelector('#timeline [data-kind="job.completed"]', { timeout: LONG });
  assert.ok(sockets.length >= socketsBefore + 2, `the page reconnected twice (${sockets.length - socketsBefore} new sockets)`);
  assert.ok((await shown()) > beforeClose);
  const streamed = await assertEveryEventOnce(page, slow, token);
  assert.ok(streamed.length > cutAt + 4);
  const diff = page.locator('#timeline details.tool .diff').first();
  assert.equal(await diff.locator('.diff-lines .add').count(), 2, 'the Edit shows two added lines');
  assert.equal(await diff.locator('.diff-lines .del').count(), 1, 'and one removed');
  const read = page.locator('#timeline details.tool:has(b:text-is("Read"))').first();
  await read.locator('summary').click();
  assert.match(await read.locator('.result pre').textContent(), /A project for the web app/);
  assert.equal(await read.locator('.mark').textContent(), '✓');
  await read.locator('summary').click();
  await page.locator('#timeline details.tool').first().locator('summary').click();
  await noHorizontalOverflow(page, 'a long session with a diff open');
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: path.join(SHOTS, 'web-session-360.png'), scale: 'css' });
  step(`offline and a dropped socket mid-stream: all ${streamed.length} events shown once, in order`);

  // ---- interrupting a turn, then cancelling the session ----
  await home(page);
  const talk = await startSession(page, 'talk slowly');
  await page.waitForSelector('#timeline [data-kind="session.init"]', { state: 'attached', timeout: LONG });
  await page.click('#interrupt');
  await page.waitForSelector('#timeline [data-kind="turn.interrupted"]', { timeout: LONG });
  assert.match(await page.textContent('#timeline [data-kind="turn.interrupted"]'), new RegExp(`interrupted by ${USER}`));
  await page.waitForSelector('#timeline [data-kind="turn.completed"]', { timeout: LONG });
  await page.click('#cancel');
  await page.click('#cancel');
  await page.waitForSelector('#timeline [data-kind="job.cancelled"]', { timeout: LONG });
  await assertEveryEventOnce(page, talk, token);
  step('a running turn is interrupted and the session cancelled');

  // ---- a prompt typed offline is sent when back online ----
  await home(page);
  await context.setOffline(true);
  await page.waitForSelector('#net.offline');
  const offline = await startSession(page, 'offline hello');
  await page.waitForSelector('#pending .msg.user.pending >> text=offline hello');
  await page.waitForSelector('#net[data-queued="1"]');
  assert.equal((await rest('GET', `/v1/jobs/${offline}`, null, token)).status, 404, 'not sent while offline');
  await context.setOffline(false);
  await page.waitForSelector('#timeline .msg.assistant >> text=Sent after all', { timeout: LONG });
  await page.waitForSelector('#net[data-queued="0"]');
  assert.equal(await page.locator('#pending .msg').count(), 0);
  await page.waitForSelector('#timeline [data-kind="job.completed"]', { timeout: LONG });
  await assertEveryEventOnce(page, offline, token);
  step('a prompt typed offline waits on the device and runs once back online');

  // ---- the list: badges and filters ----
  await home(page);
  await eventually('the list to show the sessions', async () =>
    (await page.locator('#jobs .job').count()) >= 5);
  assert.equal(await page.locator(`#jobs .job[data-job="${approvals}"] .badge`).textContent(), 'completed');
  assert.equal(await page.locator(`#jobs .job[data-job="${hello}"] .badge`).textContent(), 'cancelled');
  await page.click('.chip[data-filter="finished"]');
  await eventually('the five finished sessions under “Finished”', async () =>
    (await page.locator('#jobs .job').count()) >= 5);
  await page.click('.chip[data-filter="waiting"]');
  assert.equal(await page.locator('#jobs .job').count(), 0);
  await page.click('.chip[data-filter="all"]');
  await noHorizontalOverflow(page, 'the list of sessions');
  await page.waitForSelector('#toast', { state: 'hidden' });
  await page.screenshot({ path: path.join(SHOTS, 'web-sessions-360.png'), scale: 'css' });
  await page.click(`#jobs .job[data-job="${approvals}"]`);
  await page.waitForSelector('#timeline [data-kind="job.completed"]');
  await assertEveryEventOnce(page, approvals, token);
  step('the list shows each session with its badge; a finished one opens with its whole history');

  // ---- an expired access token is refreshed (rotation) and the request retried ----
  const before = await page.evaluate(() => JSON.parse(localStorage.getItem('paddock.session')));
  await page.evaluate(() => {
    const stored = JSON.parse(localStorage.getItem('paddock.session'));
    stored.access = 'expired.access.token';
    stored.accessExp = Date.now() + 3_600_000;
    localStorage.setItem('paddock.session', JSON.stringify(stored));
  });
  await home(page);
  await page.waitForSelector('#jobs .job');
  const after = await page.evaluate(() => JSON.parse(localStorage.getItem('paddock.session')));
  assert.notEqual(after.refresh, before.refresh, 'the refresh token rotated');
  assert.notEqual(after.access, 'expired.access.token');
  const reused = await rest('POST', '/v1/auth/refresh', { refresh_token: after.refresh });
  assert.equal(reused.status, 200, 'the rotated refresh token works once more (and rotates again)');
  step('a refused access token is renewed with the refresh token and the request tried again');

  // The test just spent the page's refresh token: the page must sign in again.
  await page.evaluate(() => {
    const stored = JSON.parse(localStorage.getItem('paddock.session'));
    stored.accessExp = 0;
    localStorage.setItem('paddock.session', JSON.stringify(stored));
  });
  await page.click('.menu a[href="/nodes"]');
  await page.waitForURL(/\/signin\?next=%2Fnodes/);
  await page.fill('input[name=user]', USER);
  await page.fill('input[name=password]', PASSWORD);
  await page.click('#signin button[type=submit]');
  await page.waitForSelector('#nodes .node');
  step('a refresh token used elsewhere ends the sign-in; signing in again returns to the page');
  await page.click('.menu a[href="/settings"]');

  // ---- approving the CLI's device login ----
  const grant = await rest('POST', '/v1/auth/device', { client_name: 'paddock CLI on a laptop' });
  assert.equal(grant.status, 200);
  await page.waitForSelector('#me');
  await noHorizontalOverflow(page, 'settings');
  await page.click('a[href="/device"]');
  await page.fill('input[name=code]', grant.body.user_code);
  await page.click('#device button[type=submit]');
  await page.waitForSelector('#device .result.ok');
  assert.match(await page.textContent('#device .result'), /paddock CLI on a laptop/);
  await noHorizontalOverflow(page, 'device approval');
  const tokens = await rest('POST', '/v1/auth/device/token', { device_code: grant.body.device_code });
  assert.equal(tokens.status, 200, JSON.stringify(tokens.body));
  assert.equal(tokens.body.user, USER);
  step('a device login of the CLI is approved from the app');

  // ---- a push message reaches the service worker and becomes a notification ----
  await context.grantPermissions(['notifications'], { origin: BASE });
  const cdp = await context.newCDPSession(page);
  const registrations = [];
  cdp.on('ServiceWorker.workerRegistrationUpdated', ({ registrations: found }) => registrations.push(...found));
  await cdp.send('ServiceWorker.enable');
  const registration = await eventually('the service worker registration', () =>
    registrations.find((r) => !r.isDeleted && r.scopeURL === `${BASE}/`));
  const pushed = { title: 'Session needs approval', body: 'demo: Bash wants to run', job_id: approvals, kind: 'approval' };
  await cdp.send('ServiceWorker.deliverPushMessage', {
    origin: BASE, registrationId: registration.registrationId, data: JSON.stringify(pushed),
  });
  const shownNotes = await eventually('the notification', () => page.evaluate(async () => {
    const worker = await navigator.serviceWorker.ready;
    const notes = await worker.getNotifications();
    return notes.length ? notes.map((n) => ({ title: n.title, body: n.body, tag: n.tag, data: n.data })) : null;
  }));
  assert.deepEqual(shownNotes, [{
    title: pushed.title, body: pushed.body, tag: `job-${approvals}`, data: { job_id: approvals, kind: 'approval' },
  }]);
  step('a push message is shown as a notification naming its job');

  // ---- admins: nodes and drain ----
  await page.click('#nav-nodes');
  const node = page.locator('#nodes .node').first();
  await node.waitFor();
  assert.equal(await node.getAttribute('data-state'), 'ready');
  await noHorizontalOverflow(page, 'nodes');
  await node.locator('[data-action="drain"]').click();
  await node.locator('[data-action="drain"]').click();
  await eventually('the node to drain', async () =>
    ['draining', 'drained'].includes(await page.locator('#nodes .node').first().getAttribute('data-state')));
  step('an admin sees the nodes and drains one');
}

main();
