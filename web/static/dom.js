// Small DOM helpers. Everything on screen is built with createElement and text
// nodes: no HTML string is ever parsed, so nothing a model or a user wrote can
// become markup.

/**
 * h('div', {class: 'x', onclick: fn, 'data-seq': 3}, 'text', child, [more]) → Element.
 * Attributes named on* become listeners; `text` sets textContent; false/null skip.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [key, value] of Object.entries(attrs)) {
      if (value === false || value === null || value === undefined) continue;
      if (key.startsWith('on') && typeof value === 'function') {
        el.addEventListener(key.slice(2), value);
      } else if (key === 'text') {
        el.textContent = String(value);
      } else if (key === 'class') {
        el.className = value;
      } else if (key === 'value' || key === 'checked' || key === 'disabled') {
        el[key] = value;
      } else {
        el.setAttribute(key, value === true ? '' : String(value));
      }
    }
  }
  append(el, children);
  return el;
}

/** Appends strings (as text), nodes and nested arrays of them. */
export function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

let toastTimer = 0;
/** A short message at the bottom of the screen. */
export function toast(message, { action, onAction, ms = 4000 } = {}) {
  const el = document.getElementById('toast');
  if (!el) return;
  clear(el);
  el.appendChild(document.createTextNode(message));
  if (action) {
    el.appendChild(h('button', { class: 'link', onclick: () => { el.hidden = true; onAction(); } }, action));
  }
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, ms);
}

/** "3 min ago", "yesterday", or a date. */
export function ago(ms) {
  if (!ms) return '';
  const seconds = Math.round((Date.now() - ms) / 1000);
  if (seconds < 45) return 'just now';
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  if (seconds < 172800) return 'yesterday';
  return new Date(ms).toLocaleDateString();
}

/** Cuts text to `max` characters with an ellipsis. */
export function cut(text, max) {
  const chars = Array.from(text ?? '');
  return chars.length > max ? `${chars.slice(0, max).join('')}…` : chars.join('');
}

/** `$0.0123` */
export function money(usd) {
  return typeof usd === 'number' ? `$${usd.toFixed(usd < 1 ? 4 : 2)}` : '';
}

/** A UUID v7 (time-ordered, as the gateway's job ids), for client-chosen ids. */
export function uuidv7() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  let ms = Date.now();
  for (let i = 5; i >= 0; i--) {
    bytes[i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  bytes[6] = (bytes[6] & 0x0f) | 0x70;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
