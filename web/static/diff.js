// File edits as diffs: the inputs of the CLI's Edit, MultiEdit and Write tools shown
// as removed and added lines. A line diff (longest common subsequence after the
// common head and tail are set aside), cut to a screenful for very long files.

import { h } from './dom.js';

const MAX_CELLS = 1_000_000;
const MAX_LINES = 400;

/** [{op: ' '|'-'|'+', text}] turning `before` into `after`, line by line. */
export function diffLines(before, after) {
  const a = before === '' ? [] : before.split('\n');
  const b = after === '' ? [] : after.split('\n');
  let head = 0;
  while (head < a.length && head < b.length && a[head] === b[head]) head += 1;
  let tail = 0;
  while (tail < a.length - head && tail < b.length - head
    && a[a.length - 1 - tail] === b[b.length - 1 - tail]) tail += 1;
  const x = a.slice(head, a.length - tail);
  const y = b.slice(head, b.length - tail);
  const out = a.slice(0, head).map((text) => ({ op: ' ', text }));
  if (x.length * y.length > MAX_CELLS) {
    for (const text of x) out.push({ op: '-', text });
    for (const text of y) out.push({ op: '+', text });
  } else {
    // lengths[i][j]: the LCS of x[i..] and y[j..], in one flat array.
    const width = y.length + 1;
    const lengths = new Uint32Array((x.length + 1) * width);
    for (let i = x.length - 1; i >= 0; i--) {
      for (let j = y.length - 1; j >= 0; j--) {
        lengths[i * width + j] = x[i] === y[j]
          ? lengths[(i + 1) * width + j + 1] + 1
          : Math.max(lengths[(i + 1) * width + j], lengths[i * width + j + 1]);
      }
    }
    let i = 0;
    let j = 0;
    while (i < x.length || j < y.length) {
      if (i < x.length && j < y.length && x[i] === y[j]) {
        out.push({ op: ' ', text: x[i] });
        i += 1;
        j += 1;
      } else if (i < x.length
        && (j >= y.length || lengths[(i + 1) * width + j] >= lengths[i * width + j + 1])) {
        out.push({ op: '-', text: x[i] });
        i += 1;
      } else {
        out.push({ op: '+', text: y[j] });
        j += 1;
      }
    }
  }
  for (const text of a.slice(a.length - tail)) out.push({ op: ' ', text });
  return out;
}

/** Keeps changed lines and `context` lines around them; elided runs become '…'. */
function trimContext(lines, context = 3) {
  const keep = lines.map(() => false);
  lines.forEach((line, index) => {
    if (line.op === ' ') return;
    for (let k = Math.max(0, index - context); k <= Math.min(lines.length - 1, index + context); k++) {
      keep[k] = true;
    }
  });
  const out = [];
  let skipped = 0;
  lines.forEach((line, index) => {
    if (keep[index]) {
      if (skipped) out.push({ op: '…', text: `${skipped} unchanged line${skipped === 1 ? '' : 's'}` });
      skipped = 0;
      out.push(line);
    } else {
      skipped += 1;
    }
  });
  if (skipped) out.push({ op: '…', text: `${skipped} unchanged line${skipped === 1 ? '' : 's'}` });
  return out;
}

function view(path, lines) {
  const shown = lines.slice(0, MAX_LINES);
  const added = lines.filter((l) => l.op === '+').length;
  const removed = lines.filter((l) => l.op === '-').length;
  const pre = h('pre', { class: 'diff-lines' }, shown.map((line) => {
    const kind = { '+': 'add', '-': 'del', ' ': 'ctx', '…': 'gap' }[line.op];
    return h('span', { class: kind }, `${line.op === '…' ? '⋯' : line.op} ${line.text}\n`);
  }));
  if (lines.length > shown.length) {
    pre.appendChild(h('span', { class: 'gap' }, `⋯ ${lines.length - shown.length} more lines\n`));
  }
  return h('div', { class: 'diff' },
    h('div', { class: 'diff-file' }, h('span', { class: 'path' }, path || 'file'),
      h('span', { class: 'stat' }, h('span', { class: 'add' }, `+${added}`), ' ',
        h('span', { class: 'del' }, `−${removed}`))),
    pre);
}

/** The diff view of an Edit, MultiEdit or Write tool input, or null for other tools. */
export function editDiff(tool, input) {
  if (!input || typeof input !== 'object') return null;
  const path = typeof input.file_path === 'string' ? input.file_path : '';
  if (tool === 'Write' && typeof input.content === 'string') {
    return view(path, diffLines('', input.content));
  }
  if (tool === 'Edit' && typeof input.old_string === 'string' && typeof input.new_string === 'string') {
    return view(path, trimContext(diffLines(input.old_string, input.new_string)));
  }
  if (tool === 'MultiEdit' && Array.isArray(input.edits)) {
    const lines = [];
    input.edits.forEach((edit, index) => {
      if (typeof edit?.old_string !== 'string' || typeof edit?.new_string !== 'string') return;
      if (index > 0) lines.push({ op: '…', text: `edit ${index + 1}` });
      lines.push(...trimContext(diffLines(edit.old_string, edit.new_string)));
    });
    return view(path, lines);
  }
  return null;
}
