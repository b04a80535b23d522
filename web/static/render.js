// A job's events as a chat: the prompt and follow-ups as the user's bubbles, the
// assistant's text as Markdown, each tool call as one line that opens to its input
// and output (file edits as diffs), approval requests as cards with a countdown, and
// the rest as the short lines the CLI prints (cli/src/render.rs). Every event gets
// one element carrying its `data-seq`; events a person need not see get a hidden one,
// so the page holds exactly one element per event and a repeat is never drawn twice.

import { editDiff } from './diff.js';
import { cut, h, money } from './dom.js';
import { markdown } from './markdown.js';

const TERMINAL = new Set(['job.completed', 'job.failed', 'job.cancelled']);
const HIDDEN = new Set(['session.init', 'cli.output', 'session.state']);

/** `2 turns · 3.1 s · $0.0123 · 1200 in / 300 out tokens`, as the CLI prints it. */
export function summaryLine(summary) {
  if (!summary) return '';
  const parts = [];
  if (typeof summary.num_turns === 'number') {
    parts.push(`${summary.num_turns} turn${summary.num_turns === 1 ? '' : 's'}`);
  }
  if (typeof summary.duration_ms === 'number') parts.push(`${(summary.duration_ms / 1000).toFixed(1)} s`);
  if (typeof summary.total_cost_usd === 'number') parts.push(`$${summary.total_cost_usd.toFixed(4)}`);
  if (typeof summary.input_tokens === 'number' && typeof summary.output_tokens === 'number') {
    parts.push(`${summary.input_tokens} in / ${summary.output_tokens} out tokens`);
  }
  return parts.join(' · ');
}

/** The input's most telling field, on one line (as the CLI shows it). */
export function toolInput(input) {
  let text = null;
  if (input && typeof input === 'object') {
    for (const key of ['command', 'file_path', 'path', 'pattern', 'url', 'description']) {
      if (typeof input[key] === 'string') {
        text = input[key];
        break;
      }
    }
  }
  if (text === null) text = JSON.stringify(input ?? null);
  return cut(text.replace(/\n/g, ' ⏎ '), 120);
}

/** The full input of a tool call: a diff for file edits, the command, or JSON. */
function inputView(tool, input) {
  const diff = editDiff(tool, input);
  if (diff) return diff;
  if (input && typeof input.command === 'string') {
    return h('div', null,
      h('pre', { class: 'cmd' }, `$ ${input.command}`),
      typeof input.description === 'string' ? h('p', { class: 'muted small' }, input.description) : null);
  }
  return h('pre', { class: 'json' }, cut(JSON.stringify(input ?? null, null, 2), 8000));
}

function clock(ms) {
  const seconds = Math.max(0, Math.ceil(ms / 1000));
  const m = Math.floor(seconds / 60);
  return `${m}:${String(seconds % 60).padStart(2, '0')}`;
}

export class Timeline {
  /**
   * `list` receives one element per event. `onDecide(requestId, allow)` answers an
   * approval card (a promise; a rejection is shown on the card). `onStats(stats)` is
   * told whenever the status, session state, cost or turns change.
   */
  constructor(list, { onDecide, onStats }) {
    this.list = list;
    this.onDecide = onDecide;
    this.onStats = onStats;
    this.seqs = new Set();
    this.last = 0;
    this.tools = new Map();
    this.approvals = new Map();
    this.stats = {
      status: 'queued', sessionState: null, cost: null, turns: null, project: '', resumes: null,
    };
    this.timer = setInterval(() => this.tick(), 1000);
  }

  destroy() {
    clearInterval(this.timer);
  }

  /** Draws `event` unless its sequence is already on the page. */
  apply(event) {
    if (this.seqs.has(event.seq)) return;
    this.seqs.add(event.seq);
    this.last = Math.max(this.last, event.seq);
    const el = this.render(event);
    el.dataset.seq = String(event.seq);
    el.dataset.kind = event.kind;
    if (!el.parentNode) this.insert(el, event.seq);
    this.onStats?.(this.stats);
  }

  insert(el, seq) {
    let before = null;
    for (let node = this.list.lastElementChild; node; node = node.previousElementSibling) {
      if (Number(node.dataset.seq) < seq) break;
      before = node;
    }
    this.list.insertBefore(el, before);
  }

  meta(text, kind = '') {
    return h('div', { class: `meta ${kind}` }, text);
  }

  render(event) {
    const stats = this.stats;
    if (TERMINAL.has(event.kind)) {
      stats.status = event.kind.slice(4);
      stats.sessionState = null;
      this.expireApprovals();
    }
    if (HIDDEN.has(event.kind)) {
      if (event.kind === 'session.state') {
        stats.sessionState = event.state;
        if (stats.status === 'queued') stats.status = 'running';
      }
      return h('span', { hidden: true });
    }
    switch (event.kind) {
      case 'job.queued':
        stats.project = event.project;
        stats.resumes = event.resumes ?? null;
        return h('div', { class: 'msg user' },
          h('div', { class: 'text' }, event.prompt),
          h('div', { class: 'who' }, `${event.submitted_by} · ${event.project}`,
            event.resumes ? ' · continues an earlier session' : ''));
      case 'job.waiting':
        return this.meta(`… waiting for a node: ${event.reason}`, 'warn');
      case 'job.started':
        stats.status = 'running';
        return this.meta(`▶ started on ${event.started_on} (attempt ${event.started_attempt})`);
      case 'job.retrying':
        stats.status = 'running';
        return this.meta(`↻ retrying (attempt ${event.retry_attempt}): ${event.reason}`, 'warn');
      case 'job.restarting':
        return this.meta(`↻ restarting the agent (restart ${event.restart}, in ${event.delay_ms} ms): ${event.reason}`, 'warn');
      case 'user.message':
        return h('div', { class: 'msg user' },
          h('div', { class: 'text' }, event.text), h('div', { class: 'who' }, event.by));
      case 'assistant.text':
        return h('div', { class: 'msg assistant' }, h('div', { class: 'md' }, markdown(event.text)));
      case 'tool.call':
        return this.toolCall(event);
      case 'tool.result':
        return this.toolResult(event);
      case 'tool.denied': {
        const call = this.tools.get(event.tool_use_id);
        if (call) call.mark('⊘', 'denied');
        return this.meta(`⊘ ${event.tool_name} was not allowed`, 'warn');
      }
      case 'approval.requested':
        return this.approval(event);
      case 'approval.resolved':
        return this.resolved(event);
      case 'turn.completed':
        this.summary(event.summary);
        return this.meta(`· turn done · ${summaryLine(event.summary)}`);
      case 'turn.retrying':
        return this.meta(`↻ model API failed (retry ${event.retry} in ${event.delay_ms} ms): ${event.reason}`, 'warn');
      case 'turn.interrupted':
        return this.meta(`■ interrupted by ${event.by}`, 'warn');
      case 'sandbox.notice':
        return this.meta(`⛔ sandbox ${event.notice}: ${event.detail}`, 'warn');
      case 'cli.garbage':
        return this.meta(`! unreadable output from the CLI: ${event.error}`, 'warn');
      case 'cli.stderr':
        return this.meta(`stderr: ${event.line}`, 'dim');
      case 'job.completed':
        this.summary(event.summary);
        return h('div', { class: 'end ok' }, `✔ completed · ${summaryLine(event.summary)}`);
      case 'job.failed':
        this.summary(event.summary);
        return h('div', { class: 'end bad' }, `✘ failed (${event.reason}): ${event.message}`,
          event.summary ? ` · ${summaryLine(event.summary)}` : '');
      case 'job.cancelled':
        this.summary(event.summary);
        return h('div', { class: 'end' }, `■ cancelled by ${event.by}`,
          event.summary ? ` · ${summaryLine(event.summary)}` : '');
      default:
        return this.meta(event.kind, 'dim');
    }
  }

  summary(summary) {
    if (!summary) return;
    if (typeof summary.total_cost_usd === 'number') this.stats.cost = summary.total_cost_usd;
    if (typeof summary.num_turns === 'number') this.stats.turns = summary.num_turns;
  }

  toolCall(event) {
    const mark = h('span', { class: 'mark' });
    const lines = h('span', { class: 'lines' });
    const body = h('div', { class: 'tool-body' }, inputView(event.name, event.input));
    const el = h('details', { class: 'tool' },
      h('summary', null, h('span', { class: 'gear' }, '⚙'), h('b', null, event.name),
        h('span', { class: 'brief' }, toolInput(event.input)), lines, mark),
      body);
    this.tools.set(event.tool_use_id, {
      el,
      body,
      mark: (symbol, kind) => {
        mark.textContent = symbol;
        el.classList.add(kind);
      },
      lines,
    });
    return el;
  }

  toolResult(event) {
    const call = this.tools.get(event.tool_use_id);
    const content = String(event.content ?? '').replace(/^\n+|\s+$/g, '');
    const count = content === '' ? 0 : content.split('\n').length;
    const out = h('div', { class: `result ${event.is_error ? 'error' : ''}` },
      h('div', { class: 'label' }, event.is_error ? 'error' : 'output'),
      h('pre', null, content === '' ? '(no output)' : cut(content, 20000)));
    if (!call) {
      const first = cut((content.split('\n')[0] ?? '').trim(), 100);
      const line = `${event.is_error ? '✗' : '↳'} ${first}${count > 1 ? ` (+${count - 1} lines)` : ''}`;
      return h('details', { class: 'tool orphan' }, h('summary', null, line), out);
    }
    call.mark(event.is_error ? '✗' : '✓', event.is_error ? 'failed' : 'ok');
    if (count > 1) call.lines.textContent = `${count} lines`;
    call.body.appendChild(out);
    return out;
  }

  approval(event) {
    const countdown = h('span', { class: 'countdown' });
    const error = h('div', { class: 'ap-error', hidden: true });
    const decide = async (allow, button) => {
      for (const b of buttons.querySelectorAll('button')) b.disabled = true;
      button.classList.add('busy');
      error.hidden = true;
      try {
        await this.onDecide(event.request_id, allow);
        card.classList.add('sent');
      } catch (failure) {
        error.textContent = failure.message;
        error.hidden = false;
        for (const b of buttons.querySelectorAll('button')) b.disabled = false;
      }
      button.classList.remove('busy');
    };
    const allow = h('button', { class: 'primary allow', onclick: () => decide(true, allow) }, 'Allow');
    const deny = h('button', { class: 'deny', onclick: () => decide(false, deny) }, 'Deny');
    const buttons = h('div', { class: 'ap-buttons' }, deny, allow);
    const card = h('div', { class: 'approval pending' },
      h('div', { class: 'ap-title' }, h('b', null, event.tool_name), ' wants to run'),
      inputView(event.tool_name, event.input),
      h('div', { class: 'ap-foot' }, countdown, buttons),
      error);
    this.approvals.set(event.request_id, {
      card, countdown, buttons, deadline: event.deadline_ms, done: false,
    });
    this.tick();
    return card;
  }

  resolved(event) {
    const verdict = event.allowed ? 'allowed' : 'denied';
    const why = event.reason ? ` (${event.reason})` : '';
    const approval = this.approvals.get(event.request_id);
    if (approval && !approval.done) {
      approval.done = true;
      approval.card.classList.remove('pending');
      approval.card.classList.add(verdict);
      approval.buttons.replaceWith(h('span', { class: 'verdict' }, `${verdict} by ${event.by}`));
      approval.countdown.remove();
    }
    return this.meta(`${event.allowed ? '✓' : '⊘'} ${verdict} by ${event.by}${why}`,
      event.allowed ? '' : 'warn');
  }

  expireApprovals() {
    for (const approval of this.approvals.values()) {
      if (approval.done) continue;
      approval.done = true;
      approval.card.classList.remove('pending');
      approval.card.classList.add('expired');
      approval.buttons.replaceWith(h('span', { class: 'verdict' }, 'no longer asked'));
      approval.countdown.remove();
    }
  }

  tick() {
    for (const approval of this.approvals.values()) {
      if (approval.done) continue;
      const left = approval.deadline - Date.now();
      approval.countdown.textContent = left > 0 ? `denied in ${clock(left)}` : 'time is up';
      approval.countdown.classList.toggle('urgent', left < 15_000);
      if (left <= 0) {
        for (const b of approval.buttons.querySelectorAll('button')) b.disabled = true;
      }
    }
  }

  /** Requests still waiting for a decision. */
  pendingApprovals() {
    return [...this.approvals.values()].filter((a) => !a.done).length;
  }
}

/** The badge of a job: queued, running, waiting, idle, completed, failed, cancelled. */
export function badgeOf(status, sessionState) {
  if (status === 'running' && sessionState === 'waiting_approval') return 'waiting';
  if (status === 'running' && sessionState === 'idle') return 'idle';
  return status;
}

export function badge(status, sessionState) {
  const name = badgeOf(status, sessionState);
  const label = name === 'waiting' ? 'needs approval' : name;
  return h('span', { class: `badge ${name}` }, label);
}

export { money };
