// The page: DOM rendering and the wiring of its controls. It draws what model.js holds and
// turns clicks and key presses into calls of connection.js (and, for signing in and out, of
// the actions main.js hands to wire()). It keeps only DOM state: the nodes it drew, which
// messages are on screen, where the "New messages" line goes (the receipts dialog is dialog.js,
// the new-group and group settings dialogs groups.js).
// - read means seen: a message counts as read once at least half of it (or half the pane, for a
//   tall one) has been on screen while the page is visible AND focused; a hidden tab or another
//   focused window never moves the read mark. An IntersectionObserver (threshold 0.5) notices
//   layout changes; scrolling, focus and visibility changes measure again;
// - a conversation with unread messages opens at the first of them, under a "New messages"
//   line, with "Jump to latest" at hand; one without opens at the bottom;
// - a conversation that goes while open (we left, were removed, or it was deleted) leaves the
//   pane saying so, instead of blank;
// - lists are updated in place, so a re-render never swallows a click or loses focus.

import * as model from './model.js';
import * as connection from './connection.js';
import * as dialog from './dialog.js';
import * as groups from './groups.js';

const $ = (id) => document.getElementById(id);

const conversationNodes = new Map(); // group id -> <li> of the conversation list
const nodes = new Map(); // seq -> <li> of the open group
const pendingNodes = new Map(); // client_id -> <li> of an outbox entry
let notice = null; // {title, text, reason}: why the open conversation went (see left())
let newSince = 0; // the read mark when the open group was opened: "New messages" goes after it
let clearMarkFor = null; // a group the user opened while marked unread: its next look clears it
const highlighted = new Set(); // seqs of the open group shown as reminded during this visit
const separator = document.createElement('li');
separator.className = 'separator';
separator.setAttribute('role', 'separator');
separator.textContent = 'New messages';

// ---- small helpers -------------------------------------------------------------------------

function textElement(tag, text, className) {
  const el = document.createElement(tag);
  el.textContent = text;
  if (className) el.className = className;
  return el;
}

const formatTime = model.formatTime;

// A bell, drawn inline (index.html's template: no icon font or image to load, and emoji
// fonts are not everywhere).
function bell() {
  return $('bell-icon').content.firstElementChild.cloneNode(true);
}

function say(text) {
  const live = $('live');
  live.append(textElement('p', text));
  while (live.childElementCount > 5) live.firstElementChild.remove();
}

// ---- what the connection reports -----------------------------------------------------------

export function setConnection(kind, text) {
  const el = $('connection');
  el.dataset.state = kind;
  el.textContent = text;
}

export function showUser(user) {
  $('me').textContent = `Signed in as ${user}`;
}

// The people one can open a direct conversation with (and pick for a group).
export function listUsers(users) {
  groups.usersChanged();
  const list = $('user-list');
  list.replaceChildren();
  for (const user of users) {
    if (user.id === model.me()) continue;
    const option = document.createElement('option');
    option.value = user.id;
    option.label = user.name;
    list.append(option);
  }
}

// A new message from someone else, for screen readers. In the open conversation, "New
// messages" moves above it when nobody is looking (unless the line still marks unread ones),
// and is not drawn for it when someone is (it arrives in front of their eyes).
export function announce(m, g) {
  say(`New message from ${model.displayName(m.from)} in ${model.groupTitle(g)}: ${m.body}`);
  if (g.id !== model.activeId()) return;
  const first = model.firstUnreadSeq(g, newSince);
  if (!attentive()) {
    if (first === null || first <= g.read) newSince = g.read;
  } else if (first === m.seq) {
    newSince = m.seq;
  }
}

// Someone asks us to read a message (a `reminder` frame).
export function reminder(frame) {
  const g = model.group(frame.group);
  say(`${model.displayName(frame.by)} reminds you of a message in ${g ? model.groupTitle(g) : frame.group}: ${frame.message.body}`);
}

// A reminder we scheduled with a send has fired.
export function reminded(frame) {
  const g = model.group(frame.group);
  say(`${model.remindedText(frame)} (your message in ${g ? model.groupTitle(g) : frame.group})`);
  dialog.reminded(frame);
}

// A group's name or receipt policy changed: the dialogs follow.
export function groupUpdated(g) {
  dialog.groupUpdated(g);
  groups.groupUpdated(g);
}

// We were added to a group (or created one).
export function joined(g) {
  if (g.kind === 'group') say(`You are now a member of ${model.groupTitle(g)}.`);
  groups.membersChanged(g.id);
}

const LEFT_WORDS = {
  removed: (title) => `You were removed from ${title}.`,
  deleted: (title) => `${title} was deleted.`,
  left: (title) => `You left ${title}.`,
};

// A `left` (called before the conversation goes): when it was open, the pane says why.
export function left(frame, g) {
  const title = model.groupTitle(g);
  const words = LEFT_WORDS[frame.reason] || LEFT_WORDS.removed;
  const text = words(title);
  groups.gone(g.id);
  if (readersOpenIn(g.id)) $('readers-dialog').close();
  say(text);
  if (model.activeId() === g.id) notice = { title, text, reason: frame.reason || 'removed' };
}

function readersOpenIn(id) {
  return $('readers-dialog').open && model.activeId() === id;
}

// After a (re)connect's `welcome`.
export function welcomed() {
  groups.welcomed();
}

// New receipt counts: the receipts dialog is refreshed when it shows one of them.
export function receiptsChanged(group, items) {
  dialog.receiptsChanged(group, items);
}

// ---- reading: what has been seen counts as read --------------------------------------------

// Someone can be looking: the page is visible and has the focus.
function attentive() {
  return document.visibilityState === 'visible' && document.hasFocus();
}

const shown = new Set(); // seqs of the open group's messages now on screen (half or more)

function isShown(visibleHeight, height, rootHeight) {
  return visibleHeight > 0 && (visibleHeight >= height / 2 || visibleHeight >= rootHeight / 2);
}

const observer = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    const seq = Number(entry.target.dataset.seq);
    const rootHeight = entry.rootBounds ? entry.rootBounds.height : Infinity;
    if (entry.isIntersecting && isShown(entry.intersectionRect.height,
      entry.boundingClientRect.height, rootHeight)) shown.add(seq);
    else shown.delete(seq);
  }
  markSeen();
}, { root: $('messages'), threshold: 0.5 });

// Measures again what is on screen (after a scroll, or when the page gets attention back).
let measureQueued = false;
function measure() {
  if (measureQueued) return;
  measureQueued = true;
  requestAnimationFrame(() => {
    measureQueued = false;
    const root = $('messages').getBoundingClientRect();
    for (const [seq, li] of nodes) {
      const r = li.getBoundingClientRect();
      const h = Math.min(r.bottom, root.bottom) - Math.max(r.top, root.top);
      if (isShown(h, r.height, root.height)) shown.add(seq); else shown.delete(seq);
    }
    markSeen();
    showJump();
  });
}

function markSeen() {
  const g = model.activeGroup();
  if (!g || !g.loaded || !attentive()) return;
  if (clearMarkFor === g.id) {
    clearMarkFor = null;
    connection.clearMarkedUnread(g);
    renderConversations();
  }
  if (shown.size === 0) return;
  if (connection.readUpTo(g, Math.max(...shown))) renderConversations();
}

// "Jump to latest" while the newest message is not in view.
function showJump() {
  const pane = $('messages');
  const g = model.activeGroup();
  const atEnd = pane.scrollHeight - pane.scrollTop - pane.clientHeight < 40;
  $('jump').hidden = !g || !g.loaded || (atEnd && g.high >= g.lastSeq);
}

// ---- rendering -----------------------------------------------------------------------------

export function render(options = {}) {
  renderConversations();
  renderPane(options);
}

// Updates the conversation list in place (replacing the buttons would swallow a click that
// lands between a re-render's mousedown and mouseup, and lose keyboard focus).
function renderConversations() {
  const list = $('conversations');
  const wanted = [];
  for (const g of model.sortedGroups()) {
    let item = conversationNodes.get(g.id);
    if (!item) {
      item = document.createElement('li');
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'conversation';
      button.dataset.group = g.id;
      button.append(textElement('span', '', 'title'));
      if (g.kind === 'direct') button.append(textElement('span', 'direct', 'kind'));
      const flag = textElement('span', '', 'flag');
      flag.title = 'Reminder: someone asks you to read a message here';
      flag.append(bell(), textElement('span', 'Reminder', 'visually-hidden'));
      button.append(flag);
      const badge = textElement('span', '', 'badge');
      badge.append(textElement('span', '', 'count'), textElement('span', '', 'visually-hidden'));
      button.append(badge);
      button.addEventListener('click', () => {
        if (model.group(g.id)?.markedUnread) clearMarkFor = g.id;
        openGroup(g.id);
      });
      item.append(button);
      conversationNodes.set(g.id, item);
    }
    const button = item.firstElementChild;
    const title = model.groupTitle(g);
    if (button.querySelector('.title').textContent !== title) {
      button.querySelector('.title').textContent = title;
    }
    if (g.id === model.activeId()) button.setAttribute('aria-current', 'true');
    else button.removeAttribute('aria-current');
    button.querySelector('.flag').hidden = g.reminders.size === 0;
    button.dataset.reminded = String(g.reminders.size > 0);
    button.dataset.marked = String(g.markedUnread);
    const badge = button.querySelector('.badge');
    badge.hidden = !(g.unread > 0 || g.markedUnread);
    badge.classList.toggle('dot', !(g.unread > 0) && g.markedUnread);
    badge.querySelector('.count').textContent = g.unread > 0 ? String(g.unread) : '';
    badge.querySelector('.visually-hidden').textContent = g.unread > 0 ? ' unread' : 'marked unread';
    wanted.push(item);
  }
  for (const id of [...conversationNodes.keys()]) {
    if (!model.hasGroup(id)) conversationNodes.delete(id);
  }
  const current = [...list.children];
  if (current.length !== wanted.length || current.some((el, i) => el !== wanted[i])) {
    list.replaceChildren(...wanted);
  }
}

// `opened`: just opened (or its first page arrived): at the first unread message, else the
// end. `scrollToEnd`: after one's own send. `keepScroll`: an older page went in above.
function renderPane({ scrollToEnd = false, keepScroll = false, opened = false } = {}) {
  const g = model.activeGroup();
  const pane = $('messages');
  const input = $('composer-input');
  $('send').disabled = !g;
  input.disabled = !g;
  $('mark-unread').hidden = !g;
  $('remind-after').disabled = !g || g.policy === 'off';
  const settings = $('group-settings');
  settings.hidden = !g || g.kind !== 'group';
  if (g) {
    const manage = model.canManage(g);
    settings.textContent = manage ? 'Settings' : 'Members';
    settings.dataset.manage = String(manage);
    notice = null;
  }
  const paneNotice = $('pane-notice');
  paneNotice.hidden = !notice;
  paneNotice.textContent = notice ? notice.text : '';
  if (notice) paneNotice.dataset.reason = notice.reason; else delete paneNotice.dataset.reason;
  if (!g) {
    $('pane-title').textContent = notice ? notice.title : 'Pick a conversation';
    $('message-list').replaceChildren();
    $('older').hidden = true;
    $('jump').hidden = true;
    nodes.clear();
    return;
  }
  $('pane-title').textContent = model.groupTitle(g);
  $('older').hidden = !(g.loaded && g.moreBefore);
  const nearEnd = pane.scrollHeight - pane.scrollTop - pane.clientHeight < 80;
  const oldHeight = pane.scrollHeight;
  const oldTop = pane.scrollTop;

  const list = $('message-list');
  const wanted = [];
  const firstNew = model.firstUnreadSeq(g, newSince);
  const seqs = [...g.msgs.keys()].sort((a, b) => a - b);
  for (const seq of seqs) {
    let li = nodes.get(seq);
    if (!li) {
      li = messageElement(g.msgs.get(seq));
      nodes.set(seq, li);
      observer.observe(li);
    }
    updateMessage(g, li, g.msgs.get(seq));
    if (seq === firstNew) wanted.push(separator);
    wanted.push(li);
  }
  const outbox = model.outboxEntries();
  for (const id of [...pendingNodes.keys()]) {
    if (!outbox.some((e) => e.client_id === id)) pendingNodes.delete(id); // sent or discarded
  }
  for (const entry of outbox) {
    if (entry.group === g.id) wanted.push(pendingElement(entry));
  }
  // Only touch the DOM when the order changed: moving nodes would disturb reading and focus.
  const current = [...list.children];
  const same = current.length === wanted.length && current.every((el, i) => el === wanted[i]);
  if (!same) {
    const keep = new Set(wanted);
    for (const el of current) {
      if (!keep.has(el) && el.dataset.seq) observer.unobserve(el);
    }
    list.replaceChildren(...wanted);
  }
  if (opened && firstNew !== null) {
    pane.scrollTop = Math.max(0, separator.offsetTop - 8);
  } else if (keepScroll) {
    pane.scrollTop = oldTop + (pane.scrollHeight - oldHeight);
  } else if (opened || scrollToEnd || (nearEnd && !same && attentive())) {
    pane.scrollTop = pane.scrollHeight;
  }
  measure();
}

function messageElement(m) {
  const li = document.createElement('li');
  const mine = m.from === model.me();
  li.className = mine ? 'msg mine' : 'msg';
  li.dataset.seq = String(m.seq);
  li.dataset.group = m.group;
  li.dataset.from = m.from;
  const meta = document.createElement('div');
  meta.className = 'meta';
  meta.append(textElement('span', mine ? 'You' : model.displayName(m.from), 'from'));
  const time = textElement('time', formatTime(m.ts));
  time.dateTime = new Date(m.ts).toISOString();
  meta.append(' ', time);
  li.append(meta, textElement('p', m.body, 'body'));
  if (mine) {
    const receipt = document.createElement('button');
    receipt.type = 'button';
    receipt.className = 'receipt';
    receipt.addEventListener('click', () => dialog.open(m.group, m.seq));
    li.append(receipt);
  }
  return li;
}

// The receipt line of one's own message; the reminder highlight of another's.
function updateMessage(g, li, m) {
  const reminder = g.reminders.get(m.seq);
  if (reminder && !highlighted.has(m.seq)) {
    highlighted.add(m.seq);
    li.classList.add('reminded');
    const note = textElement('p', ` ${model.displayName(reminder.by)} reminded you`, 'reminder-note');
    note.prepend(bell());
    li.append(note);
  }
  const button = li.querySelector('.receipt');
  if (!button) return;
  const text = model.receiptText(g, m.seq);
  if (button.textContent !== text) button.textContent = text;
  const r = g.receipts.get(m.seq);
  const off = g.policy === 'off';
  button.disabled = off;
  if (off) button.removeAttribute('aria-haspopup'); else button.setAttribute('aria-haspopup', 'dialog');
  if (r && !off) {
    button.dataset.read = String(r.read);
    button.dataset.delivered = String(r.delivered);
    button.dataset.recipients = String(r.recipients);
  } else {
    delete button.dataset.read;
    delete button.dataset.delivered;
    delete button.dataset.recipients;
  }
}

function pendingElement(entry) {
  let li = pendingNodes.get(entry.client_id);
  if (!li) {
    li = document.createElement('li');
    li.className = 'msg mine pending';
    li.dataset.clientId = entry.client_id;
    li.append(textElement('p', entry.body, 'body'), textElement('p', '', 'status'));
    pendingNodes.set(entry.client_id, li);
  }
  const status = li.querySelector('.status');
  status.replaceChildren();
  if (entry.failed) {
    li.classList.add('failed');
    status.append(`Not sent: ${entry.failed} `);
    const discard = textElement('button', 'Discard');
    discard.type = 'button';
    discard.addEventListener('click', () => {
      model.dropFromOutbox(entry.group, entry.client_id);
      render();
    });
    status.append(discard);
  } else {
    status.textContent = connection.isOnline() ? 'Sending\u2026' : 'Waiting for the connection\u2026';
  }
  return li;
}

export function openGroup(id) {
  const g = model.group(id);
  if (!g) return;
  const switching = model.activeId() !== id;
  if (switching) {
    notice = null;
    model.setActive(id);
    nodes.clear();
    shown.clear();
    highlighted.clear();
    observer.disconnect();
    $('message-list').replaceChildren();
    newSince = g.read;
  }
  document.body.classList.add('show-pane');
  connection.refresh(g);
  render({ opened: switching });
}

// "Mark as unread": the conversation is left, so nothing in it is read until it is opened again.
function markUnread() {
  const g = model.activeGroup();
  if (!g) return;
  connection.markUnread(g);
  model.setActive(null);
  document.body.classList.remove('show-pane');
  render();
  const button = document.querySelector(`.conversation[data-group="${CSS.escape(g.id)}"]`);
  if (button) button.focus();
}

// ---- signed in, signed out -----------------------------------------------------------------

export function showApp() {
  $('signin').hidden = true;
  $('app').hidden = false;
  $('sign-out').hidden = false;
  $('change-password').hidden = false;
}

// After signing out: nothing of the conversations stays on the page (the sign-in form is
// account.js's).
export function clearApp() {
  conversationNodes.clear();
  nodes.clear();
  notice = null;
  for (const id of ['readers-dialog', 'settings-dialog', 'new-group-dialog', 'password-dialog']) {
    if ($(id).open) $(id).close();
  }
  $('conversations').replaceChildren();
  $('message-list').replaceChildren();
  $('pane-notice').hidden = true;
  setConnection('offline', 'Signed out');
  $('me').textContent = '';
  $('app').hidden = true;
  $('sign-out').hidden = true;
  $('change-password').hidden = true;
}

// ---- the page's controls -------------------------------------------------------------------

// Wires the controls of the conversations (signing in and out is account.js's).
export function wire() {
  document.addEventListener('visibilitychange', measure);
  window.addEventListener('focus', measure);

  dialog.wire();
  groups.wire({ open: openGroup });
  $('group-settings').addEventListener('click', () => {
    const g = model.activeGroup();
    if (g) groups.openSettings(g.id);
  });

  $('composer').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = $('composer-input');
    const after = $('remind-after');
    connection.sendMessage(input.value, after.disabled ? null : Number(after.value) || null);
    input.value = '';
    after.value = '';
    input.focus();
  });

  $('composer-input').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $('composer').requestSubmit();
    }
  });

  $('direct-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = $('direct-input');
    const other = input.value.trim();
    $('direct-error').textContent = '';
    if (!other) return;
    if (!connection.isOnline()) {
      $('direct-error').textContent = 'Offline: try again once connected.';
      return;
    }
    connection.request({ type: 'direct', with: other }, (reply) => {
      if (reply.type !== 'direct') {
        $('direct-error').textContent = reply.message || 'Could not open the conversation.';
        return;
      }
      input.value = '';
      if (model.hasGroup(reply.group)) openGroup(reply.group);
      else model.openWhenJoinedIs(reply.group); // its `joined` is on the way
    });
  });

  $('older').addEventListener('click', () => connection.loadOlder(model.activeGroup()));
  $('messages').addEventListener('scroll', () => {
    const g = model.activeGroup();
    if (g && $('messages').scrollTop < 40) connection.loadOlder(g);
    measure();
  });
  $('jump').addEventListener('click', () => {
    const pane = $('messages');
    pane.scrollTop = pane.scrollHeight;
    measure();
  });
  $('mark-unread').addEventListener('click', markUnread);

  $('back').addEventListener('click', () => {
    document.body.classList.remove('show-pane');
    const button = document.querySelector(`.conversation[aria-current="true"]`);
    if (button) button.focus();
  });
}
