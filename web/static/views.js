// The app's screens other than a live session: sign-in, the list of sessions, a new
// session, the nodes (for admins), settings, and approving another device's sign-in.
// Each screen is `async (context) => cleanup?`; context holds `main` (where to draw),
// `navigate`, `setTitle`, `query`, `params` and `alive()` (false once the user moved
// on, so late answers are not drawn).

import { ApiError, Offline, api, hasScope, login, logout } from './api.js';
import { ago, clear, cut, h, money, toast, uuidv7 } from './dom.js';
import { discard, enqueue, outbox, pending } from './outbox.js';
import { disablePush, enablePush, pushState } from './push.js';
import { badge, badgeOf } from './render.js';
import { loadSession, prefs, projects, rememberProject, savePrefs } from './store.js';

/** A message for a person from any failure. */
export function problem(error) {
  if (error instanceof Offline) return 'No connection to the gateway.';
  return error?.message || String(error);
}

/** Only paths of this app: '/x', never '//host' or 'http:…'. */
function safeNext(next) {
  return typeof next === 'string' && /^\/(?!\/)/.test(next) ? next : '/';
}

function field(label, input, hint) {
  return h('label', { class: 'field' }, h('span', null, label), input,
    hint ? h('small', { class: 'muted' }, hint) : null);
}

/** Re-runs `work` every `ms` while the page is visible; returns a stop function. */
function every(ms, work) {
  const timer = setInterval(() => {
    if (document.visibilityState === 'visible' && navigator.onLine) work();
  }, ms);
  return () => clearInterval(timer);
}

// ---- sign in ----

export async function signin({ main, setTitle, navigate, query }) {
  setTitle('Sign in');
  const next = safeNext(query.get('next'));
  if (loadSession()) {
    navigate(next, { replace: true });
    return;
  }
  const user = h('input', { name: 'user', autocomplete: 'username', required: true, autocapitalize: 'none' });
  const password = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const totp = h('input', {
    name: 'totp', inputmode: 'numeric', autocomplete: 'one-time-code', pattern: '[0-9]{6}', maxlength: '6',
  });
  const totpField = field('One-time code', totp, 'From your authenticator app.');
  totpField.hidden = true;
  const device = h('input', { name: 'device', value: defaultDeviceName() });
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const button = h('button', { class: 'primary wide', type: 'submit' }, 'Sign in');
  const form = h('form', { class: 'card form', id: 'signin' },
    field('User', user), field('Password', password), totpField,
    field('This device', device, 'Shown in your list of signed-in devices.'),
    error, button);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.hidden = true;
    button.disabled = true;
    try {
      await login(user.value.trim(), password.value, totp.value.trim() || null, device.value.trim() || 'web');
      navigate(next, { replace: true });
    } catch (failure) {
      if (failure instanceof ApiError && failure.code === 'totp_required') {
        totpField.hidden = false;
        totp.required = true;
        totp.focus();
        error.textContent = 'This account needs the one-time code from your authenticator.';
      } else if (failure instanceof ApiError && failure.code === 'invalid_credentials') {
        error.textContent = 'The user name, password or one-time code is wrong.';
      } else {
        error.textContent = problem(failure);
      }
      error.hidden = false;
    }
    button.disabled = false;
  });
  main.appendChild(h('section', { class: 'narrow' },
    h('p', { class: 'lead' }, 'Run Claude Code on your Paddock from anywhere.'), form));
  user.focus();
}

function defaultDeviceName() {
  const agent = navigator.userAgent;
  const system = /iPhone|iPad/.test(agent) ? 'iPhone' : /Android/.test(agent) ? 'Android'
    : /Mac/.test(agent) ? 'Mac' : /Windows/.test(agent) ? 'Windows' : /Linux/.test(agent) ? 'Linux' : 'browser';
  return `web app on ${system}`;
}

// ---- sessions ----

const FILTERS = [
  ['all', 'All'],
  ['running', 'Running'],
  ['waiting', 'Needs approval'],
  ['finished', 'Finished'],
];

function filterOf(job) {
  const badgeName = badgeOf(job.status, job.session_state);
  if (badgeName === 'waiting') return 'waiting';
  if (['completed', 'failed', 'cancelled'].includes(job.status)) return 'finished';
  return 'running';
}

function jobItem(job) {
  const turns = typeof job.num_turns === 'number' ? `${job.num_turns} turn${job.num_turns === 1 ? '' : 's'}` : '';
  const facts = [job.node, turns, money(job.cost_usd)]
    .filter(Boolean).join(' · ');
  return h('a', { class: 'job', href: `/jobs/${job.id}`, 'data-job': job.id, 'data-status': badgeOf(job.status, job.session_state) },
    h('div', { class: 'job-top' }, h('span', { class: 'project' }, job.project),
      badge(job.status, job.session_state), h('span', { class: 'when' }, ago(job.created_at_ms))),
    h('div', { class: 'prompt' }, cut((job.prompt ?? '').split('\n')[0], 140)),
    facts ? h('div', { class: 'facts' }, facts) : null);
}

export async function sessions({ main, setTitle, alive }) {
  setTitle('Sessions');
  let filter = sessionStorage.getItem('paddock.filter') || 'all';
  let jobs = [];
  let nextBefore = null;
  const chips = h('div', { class: 'chips', role: 'tablist' });
  const list = h('div', { class: 'jobs', id: 'jobs' });
  const more = h('button', { class: 'wide', hidden: true, onclick: () => load(true) }, 'Older sessions');
  const status = h('p', { class: 'muted center small' });
  const drawChips = () => {
    clear(chips);
    for (const [name, label] of FILTERS) {
      const count = name === 'all' ? jobs.length : jobs.filter((j) => filterOf(j) === name).length;
      chips.appendChild(h('button', {
        class: `chip ${filter === name ? 'on' : ''}`, role: 'tab', 'aria-selected': String(filter === name),
        'data-filter': name,
        onclick: () => { filter = name; sessionStorage.setItem('paddock.filter', name); draw(); },
      }, label, count && name !== 'all' ? h('span', { class: 'count' }, String(count)) : null));
    }
  };
  const draw = async () => {
    drawChips();
    clear(list);
    const queued = (await pending()).filter((item) => item.kind === 'submit');
    if (filter === 'all' || filter === 'running') {
      for (const item of queued) {
        list.appendChild(h('a', { class: 'job queued-here', href: `/jobs/${item.job_id}`, 'data-job': item.job_id },
          h('div', { class: 'job-top' }, h('span', { class: 'project' }, item.body.project),
            h('span', { class: 'badge device' }, 'on this device'), h('span', { class: 'when' }, ago(item.at))),
          h('div', { class: 'prompt' }, cut(item.body.prompt.split('\n')[0], 140))));
      }
    }
    const shown = jobs.filter((job) => filter === 'all' || filterOf(job) === filter);
    for (const job of shown) list.appendChild(jobItem(job));
    if (!list.firstChild) {
      list.appendChild(h('p', { class: 'muted center empty' },
        jobs.length === 0 ? 'No sessions yet. Start one with “New”.' : 'Nothing here.'));
    }
    more.hidden = !nextBefore;
  };
  const load = async (older) => {
    try {
      const path = older && nextBefore ? `/v1/jobs?limit=30&before=${nextBefore}` : '/v1/jobs?limit=30';
      const page = await api('GET', path);
      if (!alive()) return;
      if (older) {
        jobs = jobs.concat(page.jobs);
        nextBefore = page.next_before;
      } else {
        // The first page again: keep older pages already loaded below it.
        const ids = new Set(page.jobs.map((j) => j.id));
        const oldest = page.jobs.at(-1)?.id;
        const rest = jobs.filter((j) => !ids.has(j.id) && oldest && j.id < oldest);
        jobs = page.jobs.concat(rest);
        if (rest.length === 0) nextBefore = page.next_before;
      }
      status.textContent = '';
      draw();
    } catch (error) {
      if (alive()) status.textContent = problem(error);
    }
  };
  main.appendChild(h('section', null,
    h('div', { class: 'toolbar' }, chips, h('a', { class: 'button primary', href: '/new', id: 'new' }, '+ New')),
    status, list, more));
  draw();
  await load(false);
  const onQueue = () => draw();
  outbox.addEventListener('change', onQueue);
  const stop = every(5000, () => load(false));
  return () => {
    stop();
    outbox.removeEventListener('change', onQueue);
  };
}

// ---- a new session ----

export async function newSession({ main, setTitle, navigate }) {
  setTitle('New session', '/');
  const saved = prefs();
  const known = projects();
  const project = h('input', {
    name: 'project', list: 'projects', required: true, autocapitalize: 'none', autocomplete: 'off',
    value: known[0] ?? '', placeholder: 'project name',
  });
  const options = h('datalist', { id: 'projects' }, known.map((name) => h('option', { value: name })));
  const prompt = h('textarea', { name: 'prompt', rows: '6', required: true, placeholder: 'What should Claude do?' });
  const approval = h('input', { type: 'checkbox', name: 'approval', checked: saved.approval !== false });
  const keepOpen = h('input', { type: 'checkbox', name: 'keep-open', checked: Boolean(saved.keepOpen) });
  const acceptEdits = h('input', { type: 'checkbox', name: 'accept-edits', checked: Boolean(saved.acceptEdits) });
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const button = h('button', { class: 'primary wide', type: 'submit' }, 'Start');
  const form = h('form', { class: 'card form', id: 'new-session' },
    field('Project', project, 'As configured on the nodes; the names you use are remembered here.'),
    options,
    field('Prompt', prompt),
    h('label', { class: 'check' }, approval, ' Ask me before a tool runs that is not allowed already'),
    h('label', { class: 'check' }, acceptEdits, ' Accept file edits without asking'),
    h('label', { class: 'check' }, keepOpen, ' Keep the session open for follow-ups (10 min)'),
    error, button);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const name = project.value.trim();
    const text = prompt.value;
    if (!name || !text.trim()) return;
    rememberProject(name);
    savePrefs({ approval: approval.checked, keepOpen: keepOpen.checked, acceptEdits: acceptEdits.checked });
    const body = {
      project: name,
      prompt: text,
      job_id: uuidv7(),
      options: {
        approval: approval.checked ? 'ask' : 'allow_listed',
        permission_mode: acceptEdits.checked ? 'acceptEdits' : 'default',
        ...(keepOpen.checked ? { idle_timeout_secs: 600 } : {}),
      },
    };
    button.disabled = true;
    error.hidden = true;
    const queue = async () => {
      await enqueue({ kind: 'submit', job_id: body.job_id, body });
      toast('No connection: the prompt will be sent when you are back online.');
      navigate(`/jobs/${body.job_id}`, { replace: true });
    };
    if (!navigator.onLine) {
      await queue();
      return;
    }
    try {
      const accepted = await api('POST', '/v1/jobs', body);
      navigate(`/jobs/${accepted.job_id}`, { replace: true });
    } catch (failure) {
      if (failure instanceof Offline) {
        await queue();
        return;
      }
      error.textContent = problem(failure);
      error.hidden = false;
      button.disabled = false;
    }
  });
  main.appendChild(h('section', { class: 'narrow' }, form));
  (known.length ? prompt : project).focus();
}

// ---- nodes ----

export async function nodes({ main, setTitle, alive }) {
  setTitle('Nodes', '/');
  const admin = hasScope('nodes:admin');
  const list = h('div', { class: 'nodes', id: 'nodes' });
  const status = h('p', { class: 'muted center small' });
  const armed = new Map();
  const act = async (node, action, button) => {
    if (action === 'drain' && armed.get(node.name) !== 'drain') {
      armed.set(node.name, 'drain');
      button.textContent = 'Tap again to drain';
      button.classList.add('armed');
      setTimeout(() => {
        if (armed.get(node.name) === 'drain') {
          armed.delete(node.name);
          if (button.isConnected) {
            button.textContent = 'Drain';
            button.classList.remove('armed');
          }
        }
      }, 4000);
      return;
    }
    armed.delete(node.name);
    button.disabled = true;
    try {
      await api('POST', `/v1/nodes/${encodeURIComponent(node.name)}/${action}`);
      toast(`${node.name}: ${action} requested`);
      await load();
    } catch (error) {
      toast(`${node.name}: ${problem(error)}`);
      button.disabled = false;
    }
  };
  const card = (node) => {
    const buttons = admin ? h('div', { class: 'row' },
      node.desired !== 'draining'
        ? h('button', { class: 'danger', 'data-action': 'drain', onclick: (e) => act(node, 'drain', e.currentTarget) }, 'Drain')
        : null,
      node.desired !== 'ready'
        ? h('button', { 'data-action': 'undrain', onclick: (e) => act(node, 'undrain', e.currentTarget) }, 'Make ready')
        : null,
      node.desired !== 'cordoned'
        ? h('button', { 'data-action': 'cordon', onclick: (e) => act(node, 'cordon', e.currentTarget) }, 'Cordon')
        : null) : null;
    const labels = Object.entries(node.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(', ');
    return h('div', { class: 'card node', 'data-node': node.name, 'data-state': node.state },
      h('div', { class: 'job-top' }, h('b', null, node.name), h('span', { class: `badge ${node.state}` }, node.state),
        node.desired !== 'ready' && node.desired !== node.state ? h('span', { class: 'muted small' }, `→ ${node.desired}`) : null),
      h('div', { class: 'slots' }, h('span', { class: 'bar-track' },
        h('span', { class: 'bar-fill' })), ` ${node.used} of ${node.slots} slots in use`),
      node.running.length ? h('div', { class: 'small' }, 'Running: ',
        node.running.map((id, i) => [i ? ', ' : '', h('a', { href: `/jobs/${id}` }, id.slice(0, 8))])) : null,
      h('div', { class: 'muted small' }, [node.pool ? `pool ${node.pool}` : '', node.version ? `v${node.version}` : '',
        node.last_seen_ms ? `seen ${ago(node.last_seen_ms)}` : 'never seen', labels].filter(Boolean).join(' · ')),
      node.drain_deadline_ms ? h('div', { class: 'small warn' }, `jobs handed back ${new Date(node.drain_deadline_ms).toLocaleTimeString()}`) : null,
      buttons);
  };
  const load = async () => {
    try {
      const found = await api('GET', '/v1/nodes');
      if (!alive()) return;
      clear(list);
      for (const node of found) {
        const el = card(node);
        const fill = el.querySelector('.bar-fill');
        fill.style.width = `${node.slots ? Math.round((100 * node.used) / node.slots) : 0}%`;
        const button = el.querySelector('[data-action="drain"]');
        if (button && armed.get(node.name) === 'drain') {
          button.textContent = 'Tap again to drain';
          button.classList.add('armed');
        }
        list.appendChild(el);
      }
      if (!found.length) list.appendChild(h('p', { class: 'muted center' }, 'No node has reported yet.'));
      status.textContent = '';
    } catch (error) {
      if (alive()) status.textContent = problem(error);
    }
  };
  main.appendChild(h('section', null, status, list));
  await load();
  return every(5000, load);
}

// ---- settings ----

export async function settings({ main, setTitle, navigate }) {
  setTitle('Settings', '/');
  const session = loadSession();
  const pushBox = h('input', { type: 'checkbox', id: 'push', disabled: true });
  const pushNote = h('small', { class: 'muted' });
  const showPush = async () => {
    const state = await pushState();
    pushBox.checked = state === 'on';
    pushBox.disabled = state === 'unsupported' || state === 'denied';
    pushNote.textContent = {
      unsupported: 'This browser cannot receive notifications (on iPhone: add Paddock to the home screen first).',
      denied: 'Notifications are blocked for this site in the browser’s settings.',
      on: 'You are told when a session finishes or waits for approval.',
      off: 'Get a notification when a session finishes or waits for approval.',
    }[state];
  };
  pushBox.addEventListener('change', async () => {
    pushBox.disabled = true;
    try {
      if (pushBox.checked) await enablePush();
      else await disablePush();
    } catch (error) {
      const missing = error instanceof ApiError && error.status === 404;
      toast(missing ? 'Notifications are turned off on this gateway.' : problem(error), { ms: 6000 });
    }
    await showPush();
  });
  const queueList = h('div', { id: 'outbox' });
  const drawQueue = async () => {
    clear(queueList);
    const items = await pending();
    if (!items.length) queueList.appendChild(h('p', { class: 'muted small' }, 'Nothing waits to be sent.'));
    for (const item of items) {
      queueList.appendChild(h('div', { class: 'row queued' },
        h('span', { class: 'grow' }, item.kind === 'submit' ? `New in ${item.body.project}: ` : 'Follow-up: ',
          cut(item.kind === 'submit' ? item.body.prompt : item.text, 60)),
        h('button', { class: 'small', onclick: () => discard(item.id) }, 'Discard')));
    }
  };
  outbox.addEventListener('change', drawQueue);
  const signOut = h('button', {
    class: 'danger wide',
    onclick: async () => {
      signOut.disabled = true;
      await logout();
      navigate('/signin', { replace: true });
    },
  }, 'Sign out');
  main.appendChild(h('section', { class: 'narrow' },
    h('div', { class: 'card' }, h('h2', null, 'Account'),
      h('p', null, 'Signed in as ', h('b', { id: 'me' }, session?.user ?? '?'),
        session?.admin ? ' (admin)' : ''),
      h('p', { class: 'muted small' }, `Device ${session?.deviceId ?? ''}`),
      h('a', { class: 'button wide', href: '/device' }, 'Approve a sign-in of the CLI or another device'),
      signOut),
    h('div', { class: 'card' }, h('h2', null, 'Notifications'),
      h('label', { class: 'check' }, pushBox, ' Notify this device'), pushNote),
    h('div', { class: 'card' }, h('h2', null, 'Queued on this device'), queueList)));
  showPush();
  drawQueue();
  return () => outbox.removeEventListener('change', drawQueue);
}

// ---- approving a device's sign-in (RFC 8628) ----

export async function device({ main, setTitle, query }) {
  setTitle('Approve a sign-in', '/settings');
  const code = h('input', {
    name: 'code', required: true, autocapitalize: 'characters', autocomplete: 'off', placeholder: 'BCDF-GHJK',
    value: (query.get('code') ?? '').toUpperCase(),
  });
  const result = h('p', { class: 'result', role: 'status', hidden: true });
  const decide = async (approve) => {
    const userCode = code.value.trim().toUpperCase();
    if (!userCode) return;
    result.hidden = true;
    try {
      const decided = await api('POST', '/v1/auth/device/approve', { user_code: userCode, approve });
      result.textContent = decided.approved
        ? `Approved: “${decided.client_name}” is now signed in as you.`
        : `Refused: “${decided.client_name}” is not signed in.`;
      result.className = `result ${decided.approved ? 'ok' : 'warn'}`;
    } catch (error) {
      result.textContent = error instanceof ApiError && error.status === 404
        ? 'No sign-in waits with this code: it may have expired or been decided already.'
        : problem(error);
      result.className = 'result error';
    }
    result.hidden = false;
  };
  const form = h('form', { class: 'card form', id: 'device' },
    h('p', null, 'Enter the code that ', h('code', null, 'paddock login'), ' (or another device) shows.'),
    field('Code', code),
    h('div', { class: 'row' },
      h('button', { type: 'button', class: 'deny', onclick: () => decide(false) }, 'Refuse'),
      h('button', { type: 'submit', class: 'primary' }, 'Approve')),
    result);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    decide(true);
  });
  main.appendChild(h('section', { class: 'narrow' }, form));
  code.focus();
}
