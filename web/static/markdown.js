// A small Markdown renderer for the assistant's text: headings, paragraphs with line
// breaks, emphasis, strong, strike-through, inline code, fenced code, block quotes,
// nested lists, pipe tables, rules, links and bare URLs. It builds DOM nodes directly
// and puts every piece of text in a text node, so the model's output can never be
// markup. Links keep only http(s) and mailto targets and open in a new tab; images
// are shown as links (the page loads nothing from elsewhere).

import { h } from './dom.js';

const FENCE = /^\s{0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_RULE = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;

/** Markdown text → a DocumentFragment. */
export function markdown(text) {
  const fragment = document.createDocumentFragment();
  for (const node of blocks(String(text ?? '').replace(/\r\n?/g, '\n').split('\n'))) {
    fragment.appendChild(node);
  }
  return fragment;
}

function isBlank(line) {
  return line.trim() === '';
}

/** Does this line start a block other than a paragraph? */
function startsBlock(line, next) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line)
    || ITEM.test(line) || (line.includes('|') && next !== undefined && TABLE_RULE.test(next)
      && next.includes('-'));
}

function blocks(lines) {
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (isBlank(line)) {
      i += 1;
      continue;
    }
    const fence = FENCE.exec(line);
    if (fence) {
      const close = new RegExp(`^\\s{0,3}${fence[1][0]}{${fence[1].length},}\\s*$`);
      const body = [];
      i += 1;
      while (i < lines.length && !close.test(lines[i])) body.push(lines[i++]);
      i += 1;
      const code = h('code', fence[2] ? { 'data-lang': fence[2] } : null, body.join('\n'));
      out.push(h('pre', { class: 'code' }, code));
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      const level = Math.min(6, heading[1].length + 2);
      out.push(h(`h${level}`, null, inline(heading[2])));
      i += 1;
      continue;
    }
    if (RULE.test(line)) {
      out.push(h('hr'));
      i += 1;
      continue;
    }
    if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && !isBlank(lines[i])) {
        const quoted = QUOTE.exec(lines[i]);
        body.push(quoted ? quoted[1] : lines[i]);
        i += 1;
      }
      out.push(h('blockquote', null, blocks(body)));
      continue;
    }
    if (ITEM.test(line)) {
      i = list(lines, i, out);
      continue;
    }
    if (line.includes('|') && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1])
      && lines[i + 1].includes('-')) {
      i = table(lines, i, out);
      continue;
    }
    const body = [];
    while (i < lines.length && !isBlank(lines[i])
      && (body.length === 0 || !startsBlock(lines[i], lines[i + 1]))) {
      body.push(lines[i]);
      i += 1;
    }
    out.push(paragraph(body));
  }
  return out;
}

function paragraph(lines) {
  const p = h('p');
  lines.forEach((line, index) => {
    if (index > 0) p.appendChild(h('br'));
    p.appendChild(inline(line.trim()));
  });
  return p;
}

/** A list starting at `start`; items hold their indented lines (nested lists). */
function list(lines, start, out) {
  const first = ITEM.exec(lines[start]);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const el = h(ordered ? 'ol' : 'ul');
  if (ordered && parseInt(first[2], 10) !== 1) el.setAttribute('start', String(parseInt(first[2], 10)));
  let i = start;
  let loose = false;
  const items = [];
  while (i < lines.length) {
    const item = ITEM.exec(lines[i]);
    if (!item || item[1].length !== indent || /\d/.test(item[2]) !== ordered) break;
    const body = [item[3]];
    const inner = indent + item[2].length + 1;
    i += 1;
    while (i < lines.length) {
      const line = lines[i];
      if (isBlank(line)) {
        const next = lines[i + 1];
        if (next !== undefined && (next.length - next.trimStart().length) >= inner) {
          loose = true;
          body.push('');
          i += 1;
          continue;
        }
        break;
      }
      const lead = line.length - line.trimStart().length;
      const sibling = ITEM.exec(line);
      if (sibling && sibling[1].length <= indent) break;
      if (lead < inner && !sibling && startsBlock(line, lines[i + 1])) break;
      body.push(lead >= inner ? line.slice(inner) : line.trimStart());
      i += 1;
    }
    items.push(body);
    if (i < lines.length && isBlank(lines[i])) {
      const next = ITEM.exec(lines[i + 1] ?? '');
      if (next && next[1].length === indent) {
        loose = true;
        i += 1;
      }
    }
  }
  for (const body of items) {
    const content = blocks(body);
    const li = h('li');
    for (const node of content) {
      if (!loose && node.tagName === 'P') li.append(...node.childNodes);
      else li.appendChild(node);
    }
    el.appendChild(li);
  }
  out.push(el);
  return i;
}

function cells(line) {
  let text = line.trim();
  if (text.startsWith('|')) text = text.slice(1);
  if (text.endsWith('|') && !text.endsWith('\\|')) text = text.slice(0, -1);
  return text.split(/(?<!\\)\|/).map((cell) => cell.trim().replace(/\\\|/g, '|'));
}

function table(lines, start, out) {
  const head = cells(lines[start]);
  const aligns = cells(lines[start + 1]).map((rule) => {
    if (rule.startsWith(':') && rule.endsWith(':')) return 'center';
    if (rule.endsWith(':')) return 'right';
    return '';
  });
  const row = (values, tag) => h('tr', null, head.map((_, index) => h(tag,
    aligns[index] ? { class: `align-${aligns[index]}` } : null, inline(values[index] ?? ''))));
  const body = [];
  let i = start + 2;
  while (i < lines.length && !isBlank(lines[i]) && lines[i].includes('|')) {
    body.push(row(cells(lines[i]), 'td'));
    i += 1;
  }
  out.push(h('div', { class: 'table' },
    h('table', null, h('thead', null, row(head, 'th')), h('tbody', null, body))));
  return i;
}

// ---- inline ----

const INLINE = [
  ['code', /(`+)([\s\S]*?[^`])\1(?!`)/g],
  ['image', /!\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g],
  ['link', /\[([^\]]+)\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g],
  ['url', /\bhttps?:\/\/[^\s<>"'`]*[^\s<>"'`.,;:!?)\]}]/g],
  ['strong', /\*\*(?=\S)([\s\S]*?\S)\*\*|__(?=\S)([\s\S]*?\S)__(?!\w)/g],
  ['del', /~~(?=\S)([\s\S]*?\S)~~/g],
  ['em', /\*(?=[^\s*])([\s\S]*?[^\s*])\*(?!\*)|(?<!\w)_(?=[^\s_])([\s\S]*?[^\s_])_(?!\w)/g],
];

/** A safe href, or null: only http(s) and mailto. */
function safeHref(target) {
  try {
    const url = new URL(target, location.href);
    return ['http:', 'https:', 'mailto:'].includes(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

function link(text, target) {
  const href = safeHref(target);
  if (!href) return document.createTextNode(text);
  return h('a', { href, target: '_blank', rel: 'noopener noreferrer nofollow' }, text);
}

/** Inline Markdown → a DocumentFragment of text nodes and elements. */
export function inline(text) {
  const fragment = document.createDocumentFragment();
  let at = 0;
  const next = new Map();
  while (at < text.length) {
    let best = null;
    for (const [kind, pattern] of INLINE) {
      let found = next.get(kind);
      if (found === undefined || (found && found.index < at)) {
        pattern.lastIndex = at;
        found = pattern.exec(text);
        next.set(kind, found);
      }
      if (found && (!best || found.index < best.match.index)) best = { kind, match: found };
    }
    if (!best) break;
    const { kind, match } = best;
    if (match.index > at) fragment.appendChild(document.createTextNode(text.slice(at, match.index)));
    switch (kind) {
      case 'code':
        fragment.appendChild(h('code', null, match[2].replace(/^ (.*) $/s, '$1')));
        break;
      case 'image':
        fragment.appendChild(link(match[1] || match[2], match[2]));
        break;
      case 'link':
        if (safeHref(match[2])) {
          const a = link('', match[2]);
          a.appendChild(inline(match[1]));
          fragment.appendChild(a);
        } else {
          fragment.appendChild(inline(match[1]));
        }
        break;
      case 'url':
        fragment.appendChild(link(match[0], match[0]));
        break;
      case 'strong':
        fragment.appendChild(h('strong', null, inline(match[1] ?? match[2])));
        break;
      case 'del':
        fragment.appendChild(h('del', null, inline(match[1])));
        break;
      default:
        fragment.appendChild(h('em', null, inline(match[1] ?? match[2])));
    }
    at = match.index + match[0].length;
  }
  if (at < text.length) fragment.appendChild(document.createTextNode(text.slice(at)));
  return fragment;
}
