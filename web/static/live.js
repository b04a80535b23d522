// Live job events over the gateway's WebSocket (`GET /v1/ws`).
//
// One socket carries every job the page follows. For each job the last sequence
// handed to the page is kept; after a reconnect each job is subscribed again with
// `after_seq` = that sequence, so what was missed arrives, once, in order. Events are
// handed on only when their sequence is exactly the next one: a repeat is dropped,
// and a gap (which the gateway should never leave) is filled from
// `GET /v1/jobs/{id}/events` before anything after it is shown.
//
// The socket is opened only while something is followed, closed at once when the
// browser says it is offline, and reopened with a growing, jittered delay; at once
// when the browser is back online or the page becomes visible again. Browsers cannot
// set headers on a WebSocket, so the access token rides in `?access_token=` (the
// gateway keeps queries out of its logs); a socket that fails before it opens twice
// in a row gets a freshly refreshed token.

import { api, freshToken } from './api.js';

const MIN_DELAY_MS = 500;
const MAX_DELAY_MS = 15_000;
const IDLE_CLOSE_MS = 5_000;

export class Live extends EventTarget {
  constructor() {
    super();
    /** job id → {last, onEvent, onEnd, onError, ended, filling, pending} */
    this.subscriptions = new Map();
    this.socket = null;
    /** 'idle' | 'connecting' | 'open' | 'offline' */
    this.state = 'idle';
    this.failures = 0;
    this.retryTimer = 0;
    this.idleTimer = 0;
    this.token = null;
    addEventListener('online', () => this.reconnectNow());
    addEventListener('offline', () => this.dropSocket('offline'));
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') this.reconnectNow();
    });
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: state }));
  }

  /**
   * Follows `job` from after `afterSeq`: `onEvent(event)` gets each later event once,
   * in order; `onEnd()` after the job's last; `onError(code, message)` on a refusal.
   * Returns a function that stops following.
   */
  follow(job, afterSeq, { onEvent, onEnd, onError }) {
    this.unfollow(job);
    const subscription = {
      last: afterSeq, onEvent, onEnd, onError, ended: false, filling: false, pending: [],
    };
    this.subscriptions.set(job, subscription);
    clearTimeout(this.idleTimer);
    if (this.state === 'open') this.subscribe(job, subscription);
    else this.reconnectNow();
    return () => this.unfollow(job, subscription);
  }

  unfollow(job, only) {
    const subscription = this.subscriptions.get(job);
    if (!subscription || (only && subscription !== only)) return;
    this.subscriptions.delete(job);
    if (this.state === 'open' && !subscription.ended) {
      this.sendJson({ type: 'unsubscribe', job_id: job });
    }
    this.closeWhenIdle();
  }

  closeWhenIdle() {
    if (this.subscriptions.size > 0) return;
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      if (this.subscriptions.size === 0) this.dropSocket('idle');
    }, IDLE_CLOSE_MS);
  }

  subscribe(job, subscription) {
    this.sendJson({ type: 'subscribe', job_id: job, after_seq: subscription.last });
  }

  sendJson(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  dropSocket(state) {
    clearTimeout(this.retryTimer);
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      socket.onclose = null;
      socket.onmessage = null;
      socket.close();
    }
    this.setState(state);
  }

  reconnectNow() {
    if (!navigator.onLine) {
      this.setState('offline');
      return;
    }
    if (this.subscriptions.size === 0) return;
    if (this.socket && this.socket.readyState <= WebSocket.OPEN) return;
    clearTimeout(this.retryTimer);
    this.failures = Math.min(this.failures, 1);
    this.connect();
  }

  scheduleReconnect() {
    clearTimeout(this.retryTimer);
    if (this.subscriptions.size === 0) {
      this.setState('idle');
      return;
    }
    if (!navigator.onLine) {
      this.setState('offline');
      return;
    }
    this.setState('connecting');
    const base = Math.min(MAX_DELAY_MS, MIN_DELAY_MS * 2 ** Math.min(this.failures, 6));
    const delay = base / 2 + Math.random() * (base / 2);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  async connect() {
    this.setState('connecting');
    let token;
    try {
      // Twice in a row closed before opening: the token may be what is refused.
      token = await freshToken(this.failures >= 2 ? this.token : undefined);
    } catch {
      this.failures += 1;
      this.scheduleReconnect();
      return;
    }
    if (this.socket || this.subscriptions.size === 0 || !navigator.onLine) {
      if (!this.socket) this.scheduleReconnect();
      return;
    }
    this.token = token;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const socket = new WebSocket(
      `${scheme}//${location.host}/v1/ws?access_token=${encodeURIComponent(token)}`,
    );
    this.socket = socket;
    let opened = false;
    socket.onopen = () => {
      opened = true;
      this.failures = 0;
      this.setState('open');
      this.dispatchEvent(new Event('open'));
      for (const [job, subscription] of this.subscriptions) {
        if (!subscription.ended) this.subscribe(job, subscription);
      }
    };
    socket.onmessage = (message) => this.take(message.data);
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.failures = opened ? 0 : this.failures + 1;
      this.scheduleReconnect();
    };
    socket.onerror = () => {
      // onclose follows and schedules the next attempt
    };
  }

  take(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (message.type === 'event' && message.event) {
      const subscription = this.subscriptions.get(message.event.job_id);
      if (subscription) this.receive(message.event.job_id, subscription, message.event);
    } else if (message.type === 'unsubscribed') {
      const subscription = this.subscriptions.get(message.job_id);
      if (subscription && !subscription.filling) this.end(message.job_id, subscription);
      else if (subscription) subscription.endAfterFill = true;
    } else if (message.type === 'error') {
      const job = /job ([0-9a-f-]{36})/i.exec(message.message ?? '')?.[1];
      const subscription = job && this.subscriptions.get(job);
      this.dispatchEvent(new CustomEvent('error', { detail: message }));
      if (subscription && !subscription.ended && /^job [0-9a-f-]{36}: /i.test(message.message)
        && ['not_found', 'unavailable', 'forbidden'].includes(message.code)) {
        subscription.onError?.(message.code, message.message);
      }
    }
  }

  end(job, subscription) {
    subscription.ended = true;
    this.subscriptions.delete(job);
    subscription.onEnd?.();
    this.closeWhenIdle();
  }

  /** Hands `event` on if it is the next one; fills a gap first. */
  receive(job, subscription, event) {
    if (subscription.filling) {
      subscription.pending.push(event);
      return;
    }
    if (event.seq <= subscription.last) return;
    if (event.seq > subscription.last + 1) {
      subscription.pending.push(event);
      this.fill(job, subscription);
      return;
    }
    subscription.last = event.seq;
    subscription.onEvent(event);
  }

  async fill(job, subscription) {
    subscription.filling = true;
    try {
      const page = await api('GET', `/v1/jobs/${job}/events?after_seq=${subscription.last}`);
      for (const event of page.events ?? []) {
        if (event.seq === subscription.last + 1) {
          subscription.last = event.seq;
          subscription.onEvent(event);
        }
      }
    } catch {
      // Start over: a new socket subscribes again from the last event shown.
      subscription.filling = false;
      subscription.pending = [];
      if (this.subscriptions.get(job) === subscription) {
        this.dropSocket('connecting');
        this.scheduleReconnect();
      }
      return;
    }
    subscription.filling = false;
    const pending = subscription.pending.sort((a, b) => a.seq - b.seq);
    subscription.pending = [];
    for (const event of pending) this.receive(job, subscription, event);
    if (subscription.endAfterFill && this.subscriptions.get(job) === subscription) {
      this.end(job, subscription);
    }
  }
}
