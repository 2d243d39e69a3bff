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
// - lists are updated in place, so a re-render never swallows a click or loses focus;
// - messages are drawn by format.js's rules: a day separator before each day, one name and
//   time for a run of one sender's messages, links and mentions of you; a reply quotes what it
//   answers (a click jumps there, loading older pages as needed); one's own messages can be
//   edited (the composer switches to editing them), one's own, or as an owner or admin
//   anyone's, deleted (after a confirmation in the bubble);
// - the open conversation is in the address (`#/c/<group>`), so a reload opens it again; a
//   group that is gone by then (or by the next welcome) leaves a notice, not a blank pane;
// - a group's members and who is online are beside the messages (presence.js), a direct
//   conversation has a dot for the other person, and "X is typing…" sits above the composer;
//   notify.js does the desktop notifications, the mutes and the title.

import * as model from './model.js';
import * as connection from './connection.js';
import * as dialog from './dialog.js';
import * as groups from './groups.js';
import * as format from './format.js';
import * as presence from './presence.js';
import * as notify from './notify.js';

const $ = (id) => document.getElementById(id);

const conversationNodes = new Map(); // group id -> <li> of the conversation list
const nodes = new Map(); // seq -> <li> of the open group
const pendingNodes = new Map(); // client_id -> <li> of an outbox entry
let notice = null; // {title, text, reason}: why the open conversation went (see left())
let newSince = 0; // the read mark when the open group was opened: "New messages" goes after it
let clearMarkFor = null; // a group the user opened while marked unread: its next look clears it
const highlighted = new Set(); // seqs of the open group shown as reminded during this visit
const dayNodes = new Map(); // day key -> <li> day separator of the open group
let composing = null; // {mode: 'reply' | 'edit', group, seq}: what the composer does now
let wantedFromUrl = null; // the group named in the address at load, opened after the welcome
let typingTimer = null;
const ROLE_WORDS = { owner: 'owner', admin: 'admin' };
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
  notify.message(m, g);
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
  if (model.activeId() === g.id) {
    notice = { title, text, reason: frame.reason || 'removed' };
    cancelComposing();
    setAddress(null);
  }
}

// After a welcome: the group open before it (`wasOpen`, titled `wasTitle`) may be gone (we
// were removed, or it was deleted, while offline); the group named in the address at load is
// opened, or the pane says it is not there.
export function restored(wasOpen, wasTitle) {
  if (wasOpen && !model.hasGroup(wasOpen)) {
    const title = wasTitle || wasOpen;
    notice = { title, text: `You are no longer a member of ${title}: you were removed, or it was deleted, while this page was offline.`, reason: 'gone' };
    cancelComposing();
    setAddress(null);
    say(notice.text);
  }
  if (wantedFromUrl) {
    const id = wantedFromUrl;
    wantedFromUrl = null;
    if (model.hasGroup(id)) {
      openGroup(id);
    } else {
      notice = { title: 'Conversation not available', text: `You are not a member of “${id}” (any more), or it was deleted.`, reason: 'missing' };
      setAddress(null);
    }
  }
}

// A message was edited or deleted (here or elsewhere): an edit or reply about it ends if it
// can no longer go on.
export function changed(g, seq) {
  const m = g.msgs.get(seq);
  dialog.messageChanged(g.id, seq);
  if (composing && composing.group === g.id && composing.seq === seq && m && m.deleted) {
    cancelComposing();
  }
}

// A `members` list arrived: the panel and the dots follow.
export function membersArrived(id) {
  if (id === model.activeId()) renderMembers();
  renderConversations();
}

// Presence or typing changed.
export function live() {
  renderConversations();
  renderMembers();
  renderTyping();
}

function readersOpenIn(id) {
  return $('readers-dialog').open && model.activeId() === id;
}

// After a (re)connect's `welcome`.
export function welcomed() {
  groups.welcomed();
}

// ---- the address: #/c/<group> --------------------------------------------------------------

function groupInAddress() {
  const match = /^#\/c\/(.+)$/.exec(location.hash);
  if (!match) return null;
  try {
    return decodeURIComponent(match[1]);
  } catch (e) {
    return null;
  }
}

function setAddress(id) {
  const hash = id ? `#/c/${encodeURIComponent(id)}` : '';
  if (location.hash === hash || (!hash && !location.hash)) return;
  history.replaceState(null, '', `${location.pathname}${location.search}${hash}`);
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
  notify.seen(g.id);
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
  renderMembers();
  renderTyping();
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
      if (g.kind === 'direct') button.append(presenceDot());
      button.append(textElement('span', '', 'title'));
      if (g.kind === 'direct') button.append(textElement('span', 'direct', 'kind'));
      const mutedMark = textElement('span', 'muted', 'muted-mark');
      button.append(mutedMark);
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
    const isMuted = notify.isMuted(g.id);
    button.dataset.muted = String(isMuted);
    button.querySelector('.muted-mark').hidden = !isMuted;
    if (g.kind === 'direct') drawPresence(button.querySelector('.presence'), otherIn(g));
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
  notify.updateTitle(); // the badges' sum
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
  const mute = $('mute');
  mute.hidden = !g;
  if (g) {
    const isMuted = notify.isMuted(g.id);
    mute.setAttribute('aria-pressed', String(isMuted));
    mute.textContent = isMuted ? 'Unmute' : 'Mute';
    mute.title = isMuted ? 'Muted: no desktop notifications, not counted in the title'
      : 'Mute: no desktop notifications from this conversation';
  }
  $('members-toggle').hidden = !g || g.kind !== 'group';
  const dot = $('pane-presence');
  dot.hidden = !g || g.kind !== 'direct';
  if (g && g.kind === 'direct') drawPresence(dot, otherIn(g));
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
    dayNodes.clear();
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
  let previous = null;
  const days = new Set();
  for (const seq of seqs) {
    const m = g.msgs.get(seq);
    let li = nodes.get(seq);
    if (!li) {
      li = messageElement(m);
      nodes.set(seq, li);
      observer.observe(li);
    }
    const day = format.dayKey(m.ts);
    let grouped = format.continues(previous, m) && seq !== firstNew;
    if (!previous || format.dayKey(previous.ts) !== day) {
      wanted.push(daySeparator(day, m.ts));
      days.add(day);
      grouped = false;
    }
    updateMessage(g, li, m, grouped);
    if (seq === firstNew) wanted.push(separator);
    wanted.push(li);
    previous = m;
  }
  for (const day of [...dayNodes.keys()]) if (!days.has(day)) dayNodes.delete(day);
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

// A day separator ("Today", "Yesterday", a date), one per day of the open conversation.
function daySeparator(day, ts) {
  let li = dayNodes.get(day);
  if (!li) {
    li = document.createElement('li');
    li.className = 'day';
    li.dataset.day = day;
    li.setAttribute('role', 'separator');
    li.append(textElement('span', '', 'day-label'));
    dayNodes.set(day, li);
  }
  const label = format.dayLabel(ts);
  const span = li.firstElementChild;
  if (span.textContent !== label) span.textContent = label;
  li.setAttribute('aria-label', label);
  return li;
}

function actionButton(text, className, onClick) {
  const button = textElement('button', text, className);
  button.type = 'button';
  button.addEventListener('click', onClick);
  return button;
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
  const time = textElement('time', format.clock(m.ts));
  time.dateTime = new Date(m.ts).toISOString();
  time.title = new Date(m.ts).toLocaleString();
  meta.append(' ', time);
  li.title = new Date(m.ts).toLocaleString();
  const quote = document.createElement('button');
  quote.type = 'button';
  quote.className = 'quote';
  quote.hidden = true;
  quote.append(textElement('span', '', 'quote-from'), textElement('span', '', 'quote-body'));
  quote.addEventListener('click', () => jumpTo(m.group, Number(quote.dataset.replyTo)));
  const edited = textElement('span', 'edited', 'edited');
  edited.hidden = true;
  const actions = document.createElement('div');
  actions.className = 'actions';
  actions.append(
    actionButton('Reply', 'act-reply', () => startComposing('reply', m.group, m.seq)),
    actionButton('Edit', 'act-edit', () => startComposing('edit', m.group, m.seq)),
    actionButton('Delete', 'act-delete', () => confirmDelete(li, true)),
  );
  const confirm = document.createElement('span');
  confirm.className = 'confirm-delete';
  confirm.hidden = true;
  confirm.append(
    textElement('span', 'Delete this message for everyone?'),
    actionButton('Delete', 'danger act-delete-yes', () => deleteMessage(li, m.group, m.seq)),
    actionButton('Keep', 'secondary act-delete-no', () => confirmDelete(li, false)),
  );
  li.append(meta, quote, textElement('p', '', 'body'), edited, actions, confirm);
  if (mine) {
    const receipt = document.createElement('button');
    receipt.type = 'button';
    receipt.className = 'receipt';
    receipt.addEventListener('click', () => dialog.open(m.group, m.seq));
    li.append(receipt);
  }
  return li;
}

// What a reply's quote says about message `seq` of `g`.
function quoteWords(g, seq) {
  const quoted = g.msgs.get(seq);
  if (!quoted) return ['', 'An earlier message (click to load it)'];
  const from = quoted.from === model.me() ? 'You' : model.displayName(quoted.from);
  return [from, quoted.deleted ? 'message deleted' : format.excerpt(quoted.body, 120)];
}

// The body, the quote, "edited", "message deleted", the actions and grouping of a message; the
// receipt line of one's own message; the reminder highlight of another's.
function updateMessage(g, li, m, grouped) {
  li.classList.toggle('grouped', grouped);
  li.dataset.grouped = String(grouped);
  const version = m.deleted ? 'deleted' : `${m.edited_ts || 0}:${m.body}`;
  if (li.dataset.version !== version) {
    li.dataset.version = version;
    const body = li.querySelector('.body');
    if (m.deleted) {
      body.textContent = 'message deleted';
      li.classList.add('deleted');
      li.dataset.deleted = 'true';
      confirmDelete(li, false);
    } else {
      format.fillBody(body, m.body, model.me());
    }
    li.classList.toggle('mentioned', !m.deleted && m.from !== model.me()
      && format.mentions(m.body, model.me()));
    const edited = li.querySelector('.edited');
    edited.hidden = m.deleted || !m.edited_ts;
    if (m.edited_ts) {
      edited.title = `Edited ${new Date(m.edited_ts).toLocaleString()}`;
      li.dataset.edited = 'true';
    }
  }
  const quote = li.querySelector('.quote');
  if (m.reply_to && !m.deleted) {
    const [from, words] = quoteWords(g, m.reply_to);
    quote.hidden = false;
    quote.dataset.replyTo = String(m.reply_to);
    quote.querySelector('.quote-from').textContent = from;
    quote.querySelector('.quote-body').textContent = words;
    quote.setAttribute('aria-label', `Replying to ${from || 'an earlier message'}: ${words}. Show it.`);
  } else {
    quote.hidden = true;
  }
  li.querySelector('.act-reply').hidden = m.deleted;
  li.querySelector('.act-edit').hidden = !model.canEdit(m);
  li.querySelector('.act-delete').hidden = !model.canDelete(g, m);
  li.querySelector('.actions').hidden = m.deleted;
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
  button.hidden = Boolean(m.deleted);
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

// ---- reply, edit, delete -------------------------------------------------------------------

function confirmDelete(li, asking) {
  li.querySelector('.confirm-delete').hidden = !asking;
  li.querySelector('.actions').classList.toggle('asking', asking);
  if (asking) li.querySelector('.act-delete-no').focus();
}

function deleteMessage(li, group, seq) {
  const sent = connection.deleteMessage(group, seq, (reply) => {
    if (reply.type !== 'deleted') say(`Could not delete the message: ${reply.message || reply.code}`);
    confirmDelete(li, false);
  });
  if (!sent) say('Offline: the message can be deleted once connected.');
}

// The composer answers message `seq` ('reply') or replaces its body ('edit').
function startComposing(mode, group, seq) {
  const g = model.group(group);
  const m = g && g.msgs.get(seq);
  if (!m || m.deleted || (mode === 'edit' && !model.canEdit(m))) return;
  const input = $('composer-input');
  // An edit borrows the composer: what was typed there comes back afterwards.
  let draft = composing ? composing.draft : input.value;
  if (composing && composing.mode === 'edit' && mode !== 'edit') input.value = draft;
  if (!(composing && composing.mode === 'edit') && mode === 'edit') draft = input.value;
  composing = { mode, group, seq, draft };
  if (mode === 'edit') input.value = m.body;
  drawComposing();
  input.focus();
  if (mode === 'edit') input.setSelectionRange(input.value.length, input.value.length);
}

function cancelComposing() {
  if (!composing) return;
  const { mode, draft } = composing;
  composing = null;
  if (mode === 'edit') $('composer-input').value = draft || '';
  drawComposing();
}

function drawComposing() {
  const bar = $('composer-context');
  $('composer-error').textContent = '';
  if (!composing) {
    bar.hidden = true;
    delete bar.dataset.mode;
    $('send').textContent = 'Send';
    return;
  }
  const g = model.group(composing.group);
  const m = g && g.msgs.get(composing.seq);
  bar.hidden = false;
  bar.dataset.mode = composing.mode;
  bar.dataset.seq = String(composing.seq);
  const from = m && m.from === model.me() ? 'yourself' : model.displayName(m ? m.from : '');
  $('composer-what').textContent = composing.mode === 'edit' ? 'Editing your message'
    : `Replying to ${from}`;
  $('composer-quote').textContent = m && !m.deleted ? format.excerpt(m.body, 100) : '';
  $('send').textContent = composing.mode === 'edit' ? 'Save' : 'Send';
}

// The composer's submit: a new message, a reply, or an edit.
function submitComposer() {
  const input = $('composer-input');
  const after = $('remind-after');
  if (composing && composing.mode === 'edit') {
    const { group, seq } = composing;
    const body = input.value;
    if (body.trim() === '') {
      $('composer-error').textContent = 'An edit cannot be empty: delete the message instead.';
      return;
    }
    const sent = connection.editMessage(group, seq, body, (reply) => {
      if (reply.type === 'edited') return;
      $('composer-error').textContent = `Not saved: ${reply.message || reply.code}`;
    });
    if (!sent) {
      $('composer-error').textContent = 'Offline: the edit can be saved once connected.';
      return;
    }
    cancelComposing();
    input.focus();
    return;
  }
  const replyTo = composing && composing.mode === 'reply' && composing.group === model.activeId()
    ? composing.seq : null;
  connection.sendMessage(input.value, after.disabled ? null : Number(after.value) || null, replyTo);
  if (input.value.trim() !== '') cancelComposing();
  input.value = '';
  after.value = '';
  input.focus();
}

// Shows message `seq` of `group` (a reply's quote was clicked), loading older pages first
// when it is not held yet.
function jumpTo(group, seq) {
  const g = model.group(group);
  if (!g || model.activeId() !== group) return;
  const li = nodes.get(seq);
  if (li) {
    li.scrollIntoView({ block: 'center' });
    li.classList.remove('jumped');
    void li.offsetWidth; // restart the highlight's animation
    li.classList.add('jumped');
    li.dataset.jumped = String(Number(li.dataset.jumped || 0) + 1);
    measure();
    return;
  }
  connection.loadBackTo(g, seq, (found) => {
    if (found && nodes.has(seq)) jumpTo(group, seq);
    else if (!found) say('That message could not be loaded.');
  });
}

// ---- members, presence and typing ----------------------------------------------------------

// The other person of a direct conversation.
function otherIn(g) {
  const parts = g.id.split(':'); // dm:<a>:<b>
  return parts[1] === model.me() ? parts[2] : parts[1];
}

function presenceDot() {
  const dot = document.createElement('span');
  dot.className = 'presence';
  return dot;
}

function drawPresence(dot, user) {
  const isOn = user === model.me() ? connection.isOnline() : presence.isOnline(user);
  const state = isOn === undefined ? 'unknown' : (isOn ? 'online' : 'offline');
  dot.dataset.online = state;
  dot.dataset.user = user || '';
  const words = state === 'unknown' ? '' : `${model.displayName(user)} is ${state}`;
  dot.title = words;
  if (words) dot.setAttribute('aria-label', words); else dot.removeAttribute('aria-label');
  dot.setAttribute('role', 'img');
}

// Whether `user` is known to be online (we are, while connected).
function isOnline(user) {
  return user === model.me() ? connection.isOnline() : presence.isOnline(user) === true;
}

// Narrow screens show the member list only when asked; wide ones unless hidden.
function narrowScreen() {
  return window.matchMedia('(max-width: 900px)').matches;
}

function membersShown() {
  return narrowScreen() ? document.body.classList.contains('show-members')
    : !document.body.classList.contains('hide-members');
}

// The member list of the open group, online first.
function renderMembers() {
  const g = model.activeGroup();
  const panel = $('members-panel');
  const show = Boolean(g && g.kind === 'group');
  panel.hidden = !show;
  panel.dataset.shown = String(show && membersShown());
  $('members-toggle').setAttribute('aria-expanded', String(show && membersShown()));
  if (!show) return;
  const members = g.members || [];
  const sorted = [...members].sort((a, b) => {
    const on = Number(isOnline(b.user)) - Number(isOnline(a.user));
    return on || (a.name || a.user).localeCompare(b.name || b.user);
  });
  const nOnline = members.filter((m) => isOnline(m.user)).length;
  $('members-title').textContent = g.members ? `Members (${members.length})` : 'Members';
  $('members-count').textContent = g.members ? `${nOnline} online` : '';
  const list = $('member-list');
  const items = sorted.map((m) => {
    const item = document.createElement('li');
    item.dataset.user = m.user;
    const dot = presenceDot();
    drawPresence(dot, m.user);
    item.dataset.online = dot.dataset.online;
    const name = m.user === model.me() ? `${m.name || m.user} (you)` : (m.name || m.user);
    item.append(dot, textElement('span', name, 'name'));
    if (ROLE_WORDS[m.role]) item.append(textElement('span', ROLE_WORDS[m.role], 'role'));
    return item;
  });
  const key = items.map((i) => `${i.dataset.user}:${i.dataset.online}:${i.textContent}`).join('|');
  if (list.dataset.key !== key) {
    list.dataset.key = key;
    list.replaceChildren(...items);
  }
}

// "Bob is typing…" above the composer of the open conversation.
function renderTyping() {
  const line = $('typing');
  const g = model.activeGroup();
  const users = g ? presence.typingIn(g.id) : [];
  const names = users.map(model.displayName);
  let text = '';
  if (names.length === 1) text = `${names[0]} is typing\u2026`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing\u2026`;
  else if (names.length > 2) text = 'Several people are typing\u2026';
  if (line.textContent !== text) line.textContent = text;
  line.dataset.users = users.join(' ');
  clearTimeout(typingTimer);
  const next = presence.nextExpiry();
  if (next !== null) typingTimer = setTimeout(renderTyping, Math.max(50, next - Date.now() + 20));
}

// ---- notifications -------------------------------------------------------------------------

function drawNotifications() {
  const permission = notify.permission();
  const box = $('notify-box');
  box.dataset.permission = permission;
  $('notify-enable').hidden = permission !== 'default';
  const words = {
    granted: 'Desktop notifications are on for direct messages and @mentions of you.',
    denied: 'Desktop notifications are blocked for this site in the browser\u2019s settings.',
    unsupported: 'This browser shows no desktop notifications.',
    default: '',
  };
  $('notify-state').textContent = words[permission] || '';
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
    dayNodes.clear();
    newSince = g.read;
    cancelComposing();
    if (g.kind === 'group') connection.members(g.id, () => {});
  }
  setAddress(id);
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
  cancelComposing();
  setAddress(null);
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
  dayNodes.clear();
  notice = null;
  composing = null;
  drawComposing();
  presence.clear();
  notify.clear();
  setAddress(null);
  for (const id of ['readers-dialog', 'settings-dialog', 'new-group-dialog', 'password-dialog']) {
    if ($(id).open) $(id).close();
  }
  $('conversations').replaceChildren();
  $('message-list').replaceChildren();
  $('member-list').replaceChildren();
  delete $('member-list').dataset.key;
  $('typing').textContent = '';
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
    submitComposer();
  });

  $('composer-input').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $('composer').requestSubmit();
    } else if (event.key === 'Escape' && composing) {
      event.preventDefault();
      cancelComposing();
    } else if (event.key === 'ArrowUp' && !composing && $('composer-input').value === '') {
      // Up in an empty composer edits one's last message (as in Slack and Element).
      const g = model.activeGroup();
      const last = g && [...g.msgs.values()].filter(model.canEdit).sort((a, b) => b.seq - a.seq)[0];
      if (last) {
        event.preventDefault();
        startComposing('edit', g.id, last.seq);
      }
    }
  });
  $('composer-input').addEventListener('input', () => {
    const g = model.activeGroup();
    if (g && $('composer-input').value.trim() !== '' && !(composing && composing.mode === 'edit')) {
      connection.announceTyping(g.id);
    }
  });
  $('composer-cancel').addEventListener('click', () => {
    cancelComposing();
    $('composer-input').focus();
  });

  $('mute').addEventListener('click', () => {
    const g = model.activeGroup();
    if (!g) return;
    notify.setMuted(g.id, !notify.isMuted(g.id));
    render();
  });
  $('members-toggle').addEventListener('click', () => {
    if (narrowScreen()) document.body.classList.toggle('show-members');
    else document.body.classList.toggle('hide-members');
    renderMembers();
  });
  $('notify-enable').addEventListener('click', async () => {
    await notify.askPermission();
    drawNotifications();
  });
  drawNotifications();
  notify.wire({ open: openGroup });
  window.addEventListener('storage', (event) => {
    if (event.key === 'rollcall.muted') render(); // muted in another tab
  });
  wantedFromUrl = groupInAddress();
  window.addEventListener('hashchange', () => {
    const id = groupInAddress();
    if (id && model.hasGroup(id) && id !== model.activeId()) openGroup(id);
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
