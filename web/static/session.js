// One session (a job), live: its history from `GET /v1/jobs/{id}/events`, then the
// WebSocket from the last event shown, so nothing is missed or drawn twice (see
// live.js). Below the timeline: the follow-up box, interrupt and cancel. A job typed
// while offline is shown from the outbox until it has been sent.

import { ApiError, Offline, api } from './api.js';
import { clear, h, money, toast } from './dom.js';
import { enqueue, outbox, pending } from './outbox.js';
import { Timeline, badge } from './render.js';
import { problem } from './views.js';

const ENDED = new Set(['completed', 'failed', 'cancelled']);
const TERMINAL_KINDS = new Set(['job.completed', 'job.failed', 'job.cancelled']);

function nearBottom() {
  const doc = document.documentElement;
  return doc.scrollHeight - (window.scrollY + window.innerHeight) < 160;
}

function toBottom() {
  window.scrollTo(0, document.documentElement.scrollHeight);
}

export async function jobView({ main, live, setTitle, navigate, params, alive }) {
  const id = params[0].toLowerCase();
  setTitle('Session', '/');
  const stopFns = [];

  const project = h('span', { class: 'project' });
  const badgeSlot = h('span');
  const facts = h('span', { class: 'facts', id: 'stats' });
  const earlier = h('a', { class: 'small', hidden: true }, '← earlier in this session');
  const head = h('div', { class: 'session-head' }, project, badgeSlot, facts, earlier);
  const list = h('div', { class: 'timeline', id: 'timeline', 'data-job': id });
  const waiting = h('div', { class: 'pending-box', id: 'pending' });
  const notice = h('p', { class: 'muted center small', role: 'status' });

  const text = h('textarea', {
    name: 'message', rows: '1', placeholder: 'Reply…', enterkeyhint: 'send', 'aria-label': 'Follow-up',
  });
  const send = h('button', { class: 'primary', type: 'submit', id: 'send' }, 'Send');
  const interrupt = h('button', { type: 'button', id: 'interrupt', hidden: true }, 'Interrupt');
  const cancel = h('button', { type: 'button', class: 'danger', id: 'cancel', hidden: true }, 'Cancel');
  const composer = h('form', { class: 'composer', id: 'composer' },
    h('div', { class: 'row' }, text, send),
    h('div', { class: 'row actions' }, interrupt, cancel));

  let ended = false;
  let started = false;
  const timeline = new Timeline(list, {
    onDecide: (requestId, allow) => api('POST',
      `/v1/jobs/${id}/approvals/${encodeURIComponent(requestId)}`, { allow }),
    onStats: (stats) => showStats(stats),
  });
  stopFns.push(() => timeline.destroy());

  function showStats(stats) {
    project.textContent = stats.project;
    if (stats.project) setTitle(stats.project, '/');
    clear(badgeSlot).appendChild(badge(stats.status, stats.sessionState));
    facts.textContent = [
      typeof stats.turns === 'number' ? `${stats.turns} turn${stats.turns === 1 ? '' : 's'}` : '',
      money(stats.cost),
    ].filter(Boolean).join(' · ');
    if (stats.resumes) {
      earlier.hidden = false;
      earlier.setAttribute('href', `/jobs/${stats.resumes}`);
    }
    ended = ENDED.has(stats.status);
    interrupt.hidden = ended || !started || stats.sessionState === 'idle';
    cancel.hidden = ended || !started;
    text.placeholder = ended ? 'Continue this session…' : 'Reply…';
  }

  main.append(head, list, waiting, notice, composer);

  // ---- follow-ups waiting in the outbox ----
  const drawWaiting = async () => {
    clear(waiting);
    for (const item of await pending()) {
      if (item.job_id !== id) continue;
      const words = item.kind === 'submit' ? item.body.prompt : item.text;
      waiting.appendChild(h('div', { class: 'msg user pending', 'data-outbox': item.id },
        h('div', { class: 'text' }, words),
        h('div', { class: 'who' }, '⏳ waiting for a connection to send')));
    }
  };
  outbox.addEventListener('change', drawWaiting);
  stopFns.push(() => outbox.removeEventListener('change', drawWaiting));

  // ---- loading and following ----
  const follow = () => {
    const stop = live.follow(id, timeline.last, {
      onEvent: (event) => {
        const stick = nearBottom();
        timeline.apply(event);
        if (stick) toBottom();
      },
      onEnd: () => showStats(timeline.stats),
      onError: (code, message) => { notice.textContent = message; },
    });
    stopFns.push(stop);
  };

  const load = async () => {
    notice.textContent = 'Loading…';
    let view;
    try {
      view = await api('GET', `/v1/jobs/${id}`);
    } catch (error) {
      if (!alive()) return;
      if (error instanceof ApiError && error.status === 404) {
        notice.textContent = 'There is no such session (or it is not yours).';
        composer.hidden = true;
        return;
      }
      notice.textContent = `${problem(error)} It loads when the connection is back.`;
      const retry = () => { removeEventListener('online', retry); if (alive()) load(); };
      addEventListener('online', retry);
      stopFns.push(() => removeEventListener('online', retry));
      return;
    }
    if (!alive()) return;
    started = true;
    timeline.stats.status = view.status;
    timeline.stats.sessionState = view.session_state;
    timeline.stats.project = view.project;
    if (typeof view.cost_usd === 'number') timeline.stats.cost = view.cost_usd;
    if (typeof view.num_turns === 'number') timeline.stats.turns = view.num_turns;
    showStats(timeline.stats);
    // The whole history (the endpoint answers every event after `after_seq`).
    let lastKind = '';
    try {
      const page = await api('GET', `/v1/jobs/${id}/events?after_seq=${timeline.last}`);
      if (!alive()) return;
      for (const event of page.events ?? []) {
        timeline.apply(event);
        lastKind = event.kind;
      }
    } catch (error) {
      if (!alive()) return;
      notice.textContent = problem(error);
    }
    notice.textContent = '';
    toBottom();
    if (!TERMINAL_KINDS.has(lastKind)) follow();
  };

  const queued = (await pending()).find((item) => item.kind === 'submit' && item.job_id === id);
  await drawWaiting();
  if (queued) {
    notice.textContent = 'This prompt is on this device, waiting for a connection.';
    const onSent = (event) => {
      if (event.detail.item.job_id !== id || event.detail.item.kind !== 'submit') return;
      outbox.removeEventListener('sent', onSent);
      if (alive()) load();
    };
    const onFailed = (event) => {
      if (event.detail.item.job_id !== id || event.detail.item.kind !== 'submit') return;
      notice.textContent = `The gateway refused this prompt: ${problem(event.detail.error)}`;
    };
    outbox.addEventListener('sent', onSent);
    outbox.addEventListener('failed', onFailed);
    stopFns.push(() => {
      outbox.removeEventListener('sent', onSent);
      outbox.removeEventListener('failed', onFailed);
    });
  } else {
    await load();
  }

  // ---- steering ----
  composer.addEventListener('submit', async (event) => {
    event.preventDefault();
    const words = text.value;
    if (!words.trim()) return;
    send.disabled = true;
    const queue = async () => {
      await enqueue({ kind: 'message', job_id: id, text: words, after_seq: timeline.last });
      text.value = '';
      toast('No connection: the message will be sent when you are back online.');
    };
    try {
      if (!navigator.onLine) {
        await queue();
      } else {
        const accepted = await api('POST', `/v1/jobs/${id}/messages`, { text: words });
        text.value = '';
        if (accepted.resumed && accepted.job_id !== id) {
          toast('The session continues in a new job.');
          navigate(`/jobs/${accepted.job_id}`);
        }
      }
    } catch (error) {
      if (error instanceof Offline) await queue();
      else toast(problem(error), { ms: 6000 });
    }
    send.disabled = false;
  });
  text.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.metaKey || event.ctrlKey)) composer.requestSubmit();
  });
  text.addEventListener('input', () => {
    text.style.height = 'auto';
    text.style.height = `${Math.min(text.scrollHeight, 160)}px`;
  });
  interrupt.addEventListener('click', async () => {
    interrupt.disabled = true;
    try {
      await api('POST', `/v1/jobs/${id}/interrupt`);
    } catch (error) {
      toast(problem(error));
    }
    interrupt.disabled = false;
  });
  let armed = 0;
  cancel.addEventListener('click', async () => {
    if (!armed) {
      cancel.textContent = 'Tap again to cancel';
      armed = setTimeout(() => { armed = 0; cancel.textContent = 'Cancel'; }, 4000);
      return;
    }
    clearTimeout(armed);
    armed = 0;
    cancel.textContent = 'Cancel';
    cancel.disabled = true;
    try {
      await api('POST', `/v1/jobs/${id}/cancel`);
    } catch (error) {
      toast(problem(error));
    }
    cancel.disabled = false;
  });

  // A follow-up from the outbox that resumed the session: open the new job.
  const onSent = (event) => {
    const { item, result } = event.detail;
    if (item.kind === 'message' && item.job_id === id && result?.resumed && result.job_id !== id) {
      toast('Your queued message continues the session in a new job.', {
        action: 'Open', onAction: () => navigate(`/jobs/${result.job_id}`),
      });
    }
  };
  outbox.addEventListener('sent', onSent);
  stopFns.push(() => outbox.removeEventListener('sent', onSent));

  return () => {
    for (const stop of stopFns) stop();
  };
}
