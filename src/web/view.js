// The page: DOM rendering and the wiring of its controls. It draws what model.js holds and
// turns clicks and key presses into calls of connection.js (and, for signing in and out, of
// the actions main.js hands to wire()). It keeps only DOM state: the nodes it drew, which
// messages are on screen, and which message the receipts dialog shows.
// - a message counts as read once it is visible on screen while the tab is visible;
// - lists are updated in place, so a re-render never swallows a click or loses focus.

import * as model from './model.js';
import * as connection from './connection.js';

const $ = (id) => document.getElementById(id);

const conversationNodes = new Map(); // group id -> <li> of the conversation list
const nodes = new Map(); // seq -> <li> of the open group
const pendingNodes = new Map(); // client_id -> <li> of an outbox entry
let readersOpen = null; // {group, seq} shown in the receipts dialog

// ---- small helpers -------------------------------------------------------------------------

function textElement(tag, text, className) {
  const el = document.createElement(tag);
  el.textContent = text;
  if (className) el.className = className;
  return el;
}

function formatTime(ts) {
  const date = new Date(ts);
  const today = new Date().toDateString() === date.toDateString();
  return today
    ? date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : date.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
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

// The people one can open a direct conversation with.
export function listUsers(users) {
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

// A new message from someone else, for screen readers.
export function announce(m, g) {
  const live = $('live');
  live.append(textElement('p',
    `New message from ${model.displayName(m.from)} in ${model.groupTitle(g)}: ${m.body}`));
  while (live.childElementCount > 5) live.firstElementChild.remove();
}

// New receipt counts: the dialog is refreshed when it shows one of them.
export function receiptsChanged(group, items) {
  const open = readersOpen;
  if (open && open.group === group && items.some((i) => i.seq === open.seq)) {
    showReaders(open.group, open.seq);
  }
}

// ---- reading: what is on screen counts as read ---------------------------------------------

const visible = new Set(); // seqs of the open group's messages now on screen
const observer = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    const seq = Number(entry.target.dataset.seq);
    const root = entry.rootBounds;
    const shown = entry.isIntersecting && (entry.intersectionRatio >= 0.5
      || (root && entry.intersectionRect.height >= root.height / 2));
    if (shown) visible.add(seq); else visible.delete(seq);
  }
  markVisibleRead();
}, { root: $('messages'), threshold: [0, 0.5, 1] });

function markVisibleRead() {
  const g = model.activeGroup();
  if (!g || !g.loaded || document.visibilityState !== 'visible' || visible.size === 0) return;
  if (connection.readUpTo(g, Math.max(...visible))) renderConversations();
}

// ---- receipts dialog -----------------------------------------------------------------------

function showReaders(group, seq) {
  readersOpen = { group, seq };
  connection.request({ type: 'readers', group, seq }, (reply) => {
    const body = $('readers-body');
    body.replaceChildren();
    if (reply.type !== 'readers') {
      body.append(textElement('p', reply.message || 'Could not load the receipts.'));
      return;
    }
    $('readers-title').textContent = `Receipts for message #${seq}`;
    const sections = [
      ['read', 'Read', reply.read],
      ['delivered', 'Received, not read yet', reply.delivered],
      ['unread', 'Not received yet', reply.unread],
    ];
    for (const [kind, title, users] of sections) {
      const section = document.createElement('section');
      section.className = `readers-${kind}`;
      section.append(textElement('h3', `${title} (${users.length})`));
      const list = document.createElement('ul');
      for (const user of users) {
        const item = textElement('li', model.displayName(user));
        item.dataset.user = user;
        list.append(item);
      }
      if (!users.length) list.append(textElement('li', 'nobody', 'nobody'));
      section.append(list);
      body.append(section);
    }
  });
  const dialog = $('readers-dialog');
  if (!dialog.open) dialog.showModal();
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
      const badge = textElement('span', '', 'badge');
      badge.append(textElement('span', '', 'count'), textElement('span', ' unread', 'visually-hidden'));
      button.append(badge);
      button.addEventListener('click', () => openGroup(g.id));
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
    const badge = button.querySelector('.badge');
    badge.hidden = !(g.unread > 0);
    badge.querySelector('.count').textContent = g.unread > 0 ? String(g.unread) : '';
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

function renderPane({ scrollToEnd = false, keepScroll = false } = {}) {
  const g = model.activeGroup();
  const pane = $('messages');
  const input = $('composer-input');
  $('send').disabled = !g;
  input.disabled = !g;
  if (!g) {
    $('pane-title').textContent = 'Pick a conversation';
    $('message-list').replaceChildren();
    $('older').hidden = true;
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
  const seqs = [...g.msgs.keys()].sort((a, b) => a - b);
  for (const seq of seqs) {
    let li = nodes.get(seq);
    if (!li) {
      li = messageElement(g.msgs.get(seq));
      nodes.set(seq, li);
      observer.observe(li);
    }
    updateReceipt(g, li, g.msgs.get(seq));
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
  if (keepScroll) {
    pane.scrollTop = oldTop + (pane.scrollHeight - oldHeight);
  } else if (scrollToEnd || (nearEnd && !same)) {
    pane.scrollTop = pane.scrollHeight;
  }
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
    receipt.setAttribute('aria-haspopup', 'dialog');
    receipt.addEventListener('click', () => showReaders(m.group, m.seq));
    li.append(receipt);
  }
  return li;
}

function updateReceipt(g, li, m) {
  const button = li.querySelector('.receipt');
  if (!button) return;
  const r = g.receipts.get(m.seq);
  const text = r
    ? `Read by ${r.read} of ${r.recipients} \u00b7 delivered to ${r.delivered}`
    : 'Sent';
  if (button.textContent !== text) button.textContent = text;
  if (r) {
    button.dataset.read = String(r.read);
    button.dataset.delivered = String(r.delivered);
    button.dataset.recipients = String(r.recipients);
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
  if (model.activeId() !== id) {
    model.setActive(id);
    nodes.clear();
    visible.clear();
    observer.disconnect();
    $('message-list').replaceChildren();
  }
  document.body.classList.add('show-pane');
  connection.refresh(g);
  render({ scrollToEnd: true });
}

// ---- signed in, signed out -----------------------------------------------------------------

export function showApp() {
  $('signin').hidden = true;
  $('app').hidden = false;
  $('sign-out').hidden = false;
}

// The sign-in form on a first visit without a token.
export function askForToken() {
  $('signin').hidden = false;
  setConnection('offline', 'Signed out');
}

// After signing out (or a refused token, with `message`): the sign-in form, nothing else.
export function showSignedOut(message) {
  conversationNodes.clear();
  nodes.clear();
  $('conversations').replaceChildren();
  $('message-list').replaceChildren();
  setConnection('offline', 'Signed out');
  $('me').textContent = '';
  $('app').hidden = true;
  $('sign-out').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = message || '';
  $('token-input').value = '';
  $('token-input').focus();
}

// ---- the page's controls -------------------------------------------------------------------

// Wires the controls; `actions.signIn(token)` and `actions.signOut()` are main.js's.
export function wire(actions) {
  document.addEventListener('visibilitychange', markVisibleRead);

  $('readers-close').addEventListener('click', () => $('readers-dialog').close());
  $('readers-dialog').addEventListener('close', () => { readersOpen = null; });

  $('signin-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const token = $('token-input').value.trim();
    if (!token) return;
    $('signin-error').textContent = '';
    actions.signIn(token);
  });

  $('sign-out').addEventListener('click', () => actions.signOut());

  $('composer').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = $('composer-input');
    connection.sendMessage(input.value);
    input.value = '';
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
  });

  $('back').addEventListener('click', () => {
    document.body.classList.remove('show-pane');
    const button = document.querySelector(`.conversation[aria-current="true"]`);
    if (button) button.focus();
  });
}
