// The receipts dialog of one's own message: the message quoted, then who has seen it, who has
// it and who does not yet (the `readers` frame), whose sizes add up to the recipients; under the
// policy `counts` only the numbers, from the pushed counts (`readers` is not even asked); under
// `off` it is never opened. Its button reminds the ones who have not seen it (`remind`).

import * as model from './model.js';
import * as connection from './connection.js';

const $ = (id) => document.getElementById(id);

let readersOpen = null; // {group, seq} shown in the dialog

function textElement(tag, text, className) {
  const el = document.createElement(tag);
  el.textContent = text;
  if (className) el.className = className;
  return el;
}

export function open(group, seq) {
  if (!readersOpen || readersOpen.group !== group || readersOpen.seq !== seq) {
    $('remind-status').textContent = '';
  }
  showReaders(group, seq);
  const dialog = $('readers-dialog');
  if (!dialog.open) dialog.showModal();
}

// The dialog: the message quoted, then who has seen it, who has it and who does not yet. Under
// the policy `counts` only the numbers (`readers` would be refused: it is not even asked).
function showReaders(group, seq) {
  readersOpen = { group, seq };
  const g = model.group(group);
  const m = g && g.msgs.get(seq);
  if (!g || !m) return;
  $('readers-quote').textContent = m.body;
  $('readers-when').textContent = `Your message, ${model.formatTime(m.ts)}`;
  const r = g.receipts.get(seq);
  if (g.policy === 'counts') {
    drawReaders(g, [['read', r ? r.read : 0], ['delivered', r ? r.delivered - r.read : 0],
      ['unread', r ? r.recipients - r.delivered : 0]], 'counts');
    return;
  }
  connection.request({ type: 'readers', group, seq }, (reply) => {
    if (!readersOpen || readersOpen.group !== group || readersOpen.seq !== seq) return;
    if (reply.type !== 'readers') {
      $('readers-body').replaceChildren(textElement('p', reply.message || 'Could not load the receipts.'));
      $('remind').hidden = true;
      return;
    }
    drawReaders(g, [['read', reply.read], ['delivered', reply.delivered],
      ['unread', reply.unread]], 'full');
  });
}

const SECTION_TITLES = { read: 'Seen', delivered: 'Delivered, not seen', unread: 'Not delivered yet' };

// `sections`: [kind, users or a count] for read, delivered (not read), unread.
function drawReaders(g, sections, mode) {
  const body = $('readers-body');
  body.replaceChildren();
  body.dataset.mode = mode;
  for (const [kind, who] of sections) {
    const n = Array.isArray(who) ? who.length : who;
    const section = document.createElement('section');
    section.className = `readers-${kind}`;
    section.dataset.count = String(n);
    section.append(textElement('h3', `${SECTION_TITLES[kind]} (${n})`));
    if (Array.isArray(who)) {
      const list = document.createElement('ul');
      for (const user of who) {
        const item = textElement('li', model.displayName(user));
        item.dataset.user = user;
        list.append(item);
      }
      if (!who.length) list.append(textElement('li', 'nobody', 'nobody'));
      section.append(list);
    }
    body.append(section);
  }
  if (mode === 'counts') body.append(textElement('p', 'This group shows counts only.', 'note'));
  const size = (who) => (Array.isArray(who) ? who.length : who);
  const n = size(sections[1][1]) + size(sections[2][1]); // recipients minus those who saw it
  const remind = $('remind');
  remind.hidden = n === 0;
  remind.dataset.count = String(n);
  remind.textContent = `Remind the ${n} who ${n === 1 ? 'hasn\u2019t' : 'haven\u2019t'} seen it`;
}

function remind() {
  const open = readersOpen;
  if (!open) return;
  const status = $('remind-status');
  status.textContent = 'Reminding\u2026';
  const sent = connection.request({ type: 'remind', group: open.group, seq: open.seq }, (reply) => {
    if (!readersOpen || readersOpen.group !== open.group || readersOpen.seq !== open.seq) return;
    if (reply.type === 'reminded') {
      status.textContent = model.remindedText(reply);
    } else if (reply.code === 'rate_limited') {
      const minutes = Math.max(1, Math.ceil((reply.retry_after_ms || 0) / 60000));
      status.textContent = `Already reminded a moment ago. You can remind them again in ${minutes} min.`;
    } else {
      status.textContent = `Could not remind: ${reply.message || reply.code}`;
    }
  });
  if (!sent) status.textContent = 'Offline: try again once connected.';
}

// A scheduled reminder of the message shown has fired.
export function reminded(frame) {
  if (readersOpen && readersOpen.group === frame.group && readersOpen.seq === frame.seq) {
    $('remind-status').textContent = model.remindedText(frame);
  }
}

// A group's name or receipt policy changed: the dialog follows (and closes under `off`).
export function groupUpdated(g) {
  if (!readersOpen || readersOpen.group !== g.id) return;
  if (g.policy === 'off') $('readers-dialog').close();
  else showReaders(g.id, readersOpen.seq);
}

// New receipt counts: the dialog is refreshed when it shows one of them.
export function receiptsChanged(group, items) {
  const shown = readersOpen;
  if (shown && shown.group === group && items.some((i) => i.seq === shown.seq)) {
    showReaders(shown.group, shown.seq);
  }
}

// A message was edited or deleted: the dialog quotes the new text, or closes for a deleted one.
export function messageChanged(group, seq) {
  if (!readersOpen || readersOpen.group !== group || readersOpen.seq !== seq) return;
  const g = model.group(group);
  const m = g && g.msgs.get(seq);
  if (!m || m.deleted) $('readers-dialog').close();
  else showReaders(group, seq);
}

export function wire() {
  $('readers-close').addEventListener('click', () => $('readers-dialog').close());
  $('readers-dialog').addEventListener('close', () => { readersOpen = null; });
  $('remind').addEventListener('click', remind);
}
