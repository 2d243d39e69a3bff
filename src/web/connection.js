// The WebSocket protocol client (docs/PROTOCOL.md): the connection, requests and their replies,
// and what each incoming frame does to the model. No DOM: what the page shows is left to the
// `ui` callbacks main.js hands to init().
// - sends carry a client_id and stay in the model's outbox until `sent`; after a reconnect the
//   outbox is sent again and the server's dedupe by client_id makes the resend harmless;
// - delivery (`ack`) and reading (`read`) are cumulative marks sent at most a few times a second;
//   `read` only moves to what view.js reports as seen (readUpTo), never on arrival;
// - a conversation with unread messages is first loaded around its read mark (so the page can
//   show the first unread one), then filled up to the head with `sync`;
// - after any disconnect it reconnects with exponential backoff, then fills every gap with `sync`;
//   with several servers (the page's own first, then those of setServers(): `?servers=`), it
//   goes on to the next one after any close (1012 included: that node became a standby) or
//   failed attempt, trying the rest of the list at once and backing off only once every server
//   failed in a row; except after close code 4001 (`unauthorized`: token revoked, password changed, account
//   deactivated), after which the same token is never tried again: it reconnects only with the
//   new token replaceToken() gives it (a password change here), else the page signs out;
// - a welcome may list only the user's most recently active groups (`more_groups`): the rest
//   are paged in with `groups` (by id, 500 a page) and taken as if the welcome had listed them;
//   until a group's summary has come, the pushes about it are held, then replayed (a `msg` the
//   summary already counts is left out). Only then are the groups no longer listed dropped and
//   the open conversation restored. Once every group is known, a `msg` of an unknown group is
//   dropped (a new group comes with `joined` first, so it can only be one just left);
// - the people (`users`) are fetched page by page after every welcome;
// - edits and deletions (`msg_edited`, `msg_deleted`, and our own `edited` / `deleted`
//   replies) change the held message in place; a deleted unread message leaves the count;
// - presence and typing (presence.js) come from `members` replies and `presence` / `typing`
//   pushes; after a welcome the members of every direct conversation are asked once, for the
//   dot beside the other person (a group's are asked when it is opened).

import * as model from './model.js';
import * as presence from './presence.js';

const PAGE = 50;
const CONTEXT = 10; // messages above the first unread one in the first page
const SYNC_PAGE = 500;
const GROUPS_PAGE = 500; // groups per `groups` page after a welcome with more_groups
const ACK_DELAY_MS = 200;
const READ_DELAY_MS = 300;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 8000;

// What the page does about the connection's news (main.js wires it to view.js):
// status(kind, text), welcome(user), users(list), render(options), announce(message, group),
// receipts(group id, items), open(group id), reminder(frame), reminded(frame),
// groupUpdated(group), joined(group), left(frame, group), refused(), unauthorized(reason),
// restored(id, title) (after a welcome: the group that was open then, gone if not listed),
// changed(group, seq) (a message was edited or deleted), members(group id), live() (presence
// or typing changed).
let ui = null;

let token = null;
let ws = null;
let online = false;
let attempt = 0; // reconnect attempts since the last welcome
let welcomedEver = false; // this token was accepted at least once
let refusals = 0; // failed connects while /healthz answered (see checkToken)
let reconnectTimer = null;
let servers = []; // further servers' WebSocket URLs, after the page's own (setServers)
let current = 0; // the server (index into serverUrls()) connected now, or to try next
let failedInRow = 0; // attempts that failed since the last welcome or backoff
let awaitingToken = false; // closed with 4001 while a new token is on its way (replaceToken)
let nextRequestId = 1;
const requests = new Map(); // request id -> callback(reply frame)
// From a welcome until every group is known (see pageGroups): {wasOpen, wasTitle, held: group
// id -> the pushes about it that came before its summary}; null otherwise.
let listing = null;

export function init(callbacks) {
  ui = callbacks;
}

export function isOnline() {
  return online;
}

// The servers besides the page's own, as `?servers=` gives them: comma-separated `host:port`
// or `ws://` / `wss://` URLs (the path defaults to /ws). Call before start().
export function setServers(text) {
  servers = parseServers(text || '');
  current = 0;
  failedInRow = 0;
}

// The WebSocket URLs of a `servers` list, without the page's own and without repeats; an entry
// that is no URL is left out.
export function parseServers(text) {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const own = ownUrl();
  const urls = [];
  for (const raw of text.split(',')) {
    const entry = raw.trim();
    if (!entry) continue;
    let url;
    try {
      url = new URL(/^wss?:\/\//i.test(entry) ? entry : `${scheme}://${entry}`);
    } catch (e) {
      continue;
    }
    if (url.protocol !== 'ws:' && url.protocol !== 'wss:') continue;
    const path = url.pathname === '/' || url.pathname === '' ? '/ws' : url.pathname;
    const ws = `${url.protocol}//${url.host}${path}`;
    if (ws !== own && !urls.includes(ws)) urls.push(ws);
  }
  return urls;
}

function ownUrl() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${location.host}/ws`;
}

// Every server to connect to, in order: the page's own first.
function serverUrls() {
  return [ownUrl(), ...servers];
}

// The server connected now (or being tried), for the status line: its host, or null for the
// page's own.
export function serverHost() {
  if (current === 0) return null;
  const url = serverUrls()[current];
  return url ? new URL(url).host : null;
}

// Connects with this token (and keeps reconnecting until stop()).
export function start(userToken) {
  token = userToken;
  awaitingToken = false;
  connect();
}

// The token to use from now on (a password change answered it). The open socket, which the
// server is about to close with 4001, stays until then; if it is already closed, this connects.
export function replaceToken(userToken) {
  token = userToken;
  if (awaitingToken) {
    awaitingToken = false;
    attempt = 0;
    connect();
  }
}

// A password change is under way: a 4001 close is then expected, and waits for replaceToken()
// (or for expectNewToken(false), when the change failed) instead of signing out.
let expectingNewToken = false;
export function expectNewToken(expecting) {
  expectingNewToken = expecting;
  if (!expecting && awaitingToken) {
    awaitingToken = false;
    ui.unauthorized('');
  }
}

// Signing out: no more reconnects; the socket is closed without the usual reconnect.
export function stop() {
  token = null;
  awaitingToken = false;
  clearTimeout(reconnectTimer);
  if (ws) {
    const closing = ws;
    ws = null;
    closing.close();
  }
  online = false;
  welcomedEver = false;
}

// ---- connection ----------------------------------------------------------------------------

function connect() {
  clearTimeout(reconnectTimer);
  const urls = serverUrls();
  if (current >= urls.length) current = 0;
  const url = `${urls[current]}?token=${encodeURIComponent(token)}`;
  const host = serverHost();
  ui.status('connecting', host ? `Connecting to ${host}\u2026` : 'Connecting\u2026');
  let socket;
  try {
    socket = new WebSocket(url);
  } catch (e) {
    scheduleReconnect(false);
    return;
  }
  ws = socket;
  const used = token; // the token this socket was opened with
  let welcomed = false;
  socket.onmessage = (event) => {
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch (e) {
      return;
    }
    if (frame.type === 'welcome') welcomed = true;
    onFrame(frame);
  };
  socket.onclose = (event) => {
    if (ws !== socket) return;
    ws = null;
    online = false;
    requests.clear();
    listing = null;
    for (const g of model.allGroups()) g.syncing = false;
    if (event.code === 4001) {
      onUnauthorized(used, event.reason);
    } else {
      scheduleReconnect(welcomed);
    }
    ui.render();
  };
}

// Closed with 4001: this token is refused from now on. A newer token (a password change) is
// used at once; one on its way is waited for; otherwise the page signs out, saying why.
function onUnauthorized(used, reason) {
  if (!token) return;
  if (token !== used) {
    attempt = 0;
    connect();
  } else if (expectingNewToken) {
    awaitingToken = true;
    ui.status('connecting', 'Password changed \u2014 reconnecting\u2026');
  } else {
    ui.unauthorized(reason || '');
  }
}

// Any close but 4001, or a failed attempt: on to the next server. A failed attempt is followed
// by the next server's at once, until every server failed in a row; only then the backoff (and,
// with no welcome yet, the token check). With one server that is a backoff after every close.
function scheduleReconnect(wasWelcomed) {
  if (!token) return;
  const count = serverUrls().length;
  current = (current + 1) % count;
  if (wasWelcomed) {
    failedInRow = 0;
    backoff();
    return;
  }
  failedInRow += 1;
  if (failedInRow < count) {
    connect();
    return;
  }
  failedInRow = 0;
  if (!welcomedEver || attempt >= 3) {
    // Not accepted: find out whether the server is down or refuses the token.
    checkToken();
  } else {
    backoff();
  }
}

function backoff() {
  const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** attempt);
  const jittered = Math.round(delay * (0.75 + Math.random() * 0.5));
  attempt += 1;
  ui.status('offline', `Offline \u2014 reconnecting in ${Math.ceil(jittered / 1000)} s`);
  reconnectTimer = setTimeout(connect, jittered);
}

// The upgrade answers 401 for a bad token, which a browser does not show to scripts; if the
// server is healthy and still refuses us, the token is the problem. Only the page's own server
// is asked (the others' /healthz is another origin's); a standby (`"role":"standby"`) counts
// as down: it refuses every session, whatever the token.
async function checkToken() {
  let healthy = false;
  try {
    const reply = await fetch('/healthz', { cache: 'no-store' });
    healthy = reply.ok && !(await isStandby(reply));
  } catch (e) {
    healthy = false;
  }
  if (!token) return;
  if (!healthy) {
    refusals = 0;
    backoff(); // the server is down: keep trying
  } else if (refusals >= 1) {
    ui.refused();
  } else {
    // The server may have come up just now: one more try before giving up on the token.
    refusals += 1;
    connect();
  }
}

async function isStandby(reply) {
  try {
    return (await reply.json()).role === 'standby';
  } catch (e) {
    return false;
  }
}

function sendFrame(frame) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  ws.send(JSON.stringify(frame));
  return true;
}

// Sends a request; `onReply` gets its answer (or its error). False when offline.
export function request(frame, onReply) {
  const id = nextRequestId++;
  frame.id = id;
  if (!sendFrame(frame)) return false;
  requests.set(id, onReply);
  return true;
}

// ---- incoming frames -----------------------------------------------------------------------

function onFrame(frame) {
  if (frame.id !== undefined && requests.has(frame.id)) {
    const callback = requests.get(frame.id);
    requests.delete(frame.id);
    callback(frame);
    return;
  }
  if (frame.type === 'welcome') return onWelcome(frame);
  if (listing && HELD.has(frame.type) && !model.isSummarized(frame.group)) {
    // About a group whose summary has not come yet in this connection: after it.
    if (!listing.held.has(frame.group)) listing.held.set(frame.group, []);
    listing.held.get(frame.group).push(frame);
    return undefined;
  }
  return onPush(frame);
}

// The pushes about one group that wait for its summary while the groups are paged in.
const HELD = new Set(['msg', 'receipt', 'read_sync', 'group_updated', 'reminder',
  'msg_edited', 'msg_deleted']);

function onPush(frame) {
  switch (frame.type) {
    case 'msg': return onMsg(frame);
    case 'receipt': return onReceipt(frame);
    case 'read_sync': return onReadSync(frame);
    case 'joined': return onJoined(frame);
    case 'left': return onLeft(frame);
    case 'group_updated': return onGroupUpdated(frame);
    case 'reminder': return onReminder(frame);
    case 'reminded': ui.reminded(frame); return undefined; // a scheduled reminder fired
    case 'members': return onMembers(frame);
    case 'msg_edited': return onEdited(frame);
    case 'msg_deleted': return onDeleted(frame);
    case 'typing': return onTyping(frame);
    case 'presence': return onPresence(frame);
    case 'error': console.warn('rollcall:', frame.code, frame.message); return undefined;
    default: return undefined; // unknown frame types are ignored (PROTOCOL.md)
  }
}

function onWelcome(frame) {
  online = true;
  welcomedEver = true;
  attempt = 0;
  refusals = 0;
  failedInRow = 0;
  const host = serverHost();
  ui.status('online', host ? `Online (${host})` : 'Online');
  ui.welcome(frame.user);
  presence.reset();
  const wasOpen = model.activeId();
  const wasTitle = wasOpen && model.hasGroup(wasOpen) ? model.groupTitle(model.group(wasOpen)) : null;
  // A read mark the server has not seen yet (lost with the connection) is sent again.
  for (const g of model.welcome(frame)) scheduleRead(g);
  fetchUsers(null, []);
  for (const entry of model.outboxEntries()) {
    if (!entry.failed) transmit(entry);
  }
  listing = { wasOpen, wasTitle, held: new Map() };
  if (frame.more_groups) {
    pageGroups(listing, null); // the rest of the groups, then endWelcome()
    ui.render();
  } else {
    endWelcome(true);
  }
}

// The groups `welcome` did not list, in `groups` pages by id; each entry is taken as if the
// welcome had listed it, and the pushes held for it meanwhile follow.
function pageGroups(current, after) {
  const frame = { type: 'groups', limit: GROUPS_PAGE };
  if (after !== null) frame.after = after;
  request(frame, (reply) => {
    if (listing !== current) return;
    if (reply.type !== 'groups') {
      // Not listed: keep what we had rather than drop groups that may still be ours.
      console.warn('rollcall: paging the groups failed:', reply.code, reply.message);
      endWelcome(false);
      return;
    }
    for (const summary of reply.groups) {
      const taken = model.takeListed(summary);
      if (!taken) continue;
      if (taken.readAhead) scheduleRead(taken.g);
      replayHeld(taken.g, summary.last_seq);
    }
    if (reply.more && reply.groups.length) {
      pageGroups(current, reply.groups[reply.groups.length - 1].group);
    } else {
      endWelcome(true);
    }
    ui.render();
  });
}

// The pushes about `g` that came before its summary, in their order; a `msg` the summary
// already counts (seq ≤ its last_seq) is left out.
function replayHeld(g, lastSeq) {
  const frames = listing.held.get(g.id) || [];
  listing.held.delete(g.id);
  for (const frame of frames) {
    if (frame.type === 'msg' && frame.seq <= lastSeq) continue;
    onPush(frame);
  }
}

// Every group is known now (`complete`: listed in the welcome or its pages): what follows a
// welcome for them all.
function endWelcome(complete) {
  const { wasOpen, wasTitle, held } = listing;
  listing = null;
  model.endListing(complete);
  // Pushes still held are about groups the listing left out (not ours any more): dropped,
  // unless the listing failed and kept the groups we had.
  for (const [id, frames] of held) {
    if (model.hasGroup(id)) for (const frame of frames) onPush(frame);
  }
  ui.restored(wasOpen, wasTitle);
  for (const g of model.allGroups()) {
    // The other person's dot; the open group's member list.
    if (g.kind === 'direct' || g.id === model.activeId()) members(g.id, () => ui.live());
  }
  for (const g of model.allGroups()) {
    if (g.loaded) {
      catchUp(g);
      pullReceipts(g, model.ownSeqs([...g.msgs.values()]));
    }
  }
  if (model.activeId()) ui.open(model.activeId());
  ui.render();
}

// The people, page by page (the `users` frame pages by id).
function fetchUsers(after, soFar) {
  const frame = { type: 'users', limit: 1000 };
  if (after !== null) frame.after = after;
  request(frame, (reply) => {
    if (reply.type !== 'users') return;
    const all = soFar.concat(reply.users);
    if (reply.more && reply.users.length) {
      fetchUsers(reply.users[reply.users.length - 1].id, all);
      return;
    }
    model.setUsers(all);
    ui.users(all);
    ui.render();
  });
}

// A `msg` of a group we do not know is dropped: once the listing after a welcome is complete
// every group of ours is known (a new one comes with `joined` before its first `msg`), so it is
// a late push of a group we just left.
function onMsg(m) {
  const g = model.group(m.group);
  if (!g) return;
  presence.stopTyping(m.group, m.from);
  const unread = model.receive(g, m);
  if (g.loaded && g.high < g.lastSeq) catchUp(g);
  if (unread) ui.announce(m, g);
  scheduleAck(g, m.seq);
  ui.render();
}

function onReceipt(frame) {
  const g = model.group(frame.group);
  if (!g) return;
  model.setReceipts(g, frame.items);
  ui.receipts(frame.group, frame.items);
  ui.render();
}

function onReadSync(frame) {
  const g = model.group(frame.group);
  if (!g) return;
  model.readElsewhere(g, frame.seq);
  if (frame.marked_unread !== undefined) model.setMarkedUnread(g, frame.marked_unread);
  recountUnread(g);
  ui.render();
}

function onGroupUpdated(frame) {
  const g = model.updateGroup(frame);
  if (!g) return;
  if (g.loaded) pullReceipts(g, model.ownSeqs([...g.msgs.values()]));
  ui.groupUpdated(g);
  ui.render();
}

function onReminder(frame) {
  if (!model.addReminder(frame)) return;
  ui.reminder(frame);
  ui.render();
}

function onJoined(summary) {
  model.addGroup(summary);
  ui.joined(model.group(summary.group));
  if (model.takeOpenWhenJoined(summary.group)) ui.open(summary.group);
  ui.render();
}

// Left, removed, or the group deleted: the conversation goes (the page says why).
function onLeft(frame) {
  const g = model.group(frame.group);
  if (!g) {
    model.removeGroup(frame.group); // a `groups` page answered before it must not add it
    return;
  }
  ui.left(frame, g); // before it goes: the page says why where it was open
  model.removeGroup(frame.group);
  ui.render();
}

// A `members` list (the reply to members, add_member, remove_member or set_role): our own role
// is taken from it.
function onMembers(frame) {
  model.setMembers(frame.group, frame.members);
  for (const m of frame.members) {
    if (m.online !== undefined) presence.setOnline(m.user, m.online);
  }
  ui.members(frame.group);
}

function onEdited(frame) {
  const g = model.applyEdit(frame);
  if (!g) return;
  ui.changed(g, frame.seq);
  ui.render();
}

function onDeleted(frame) {
  const { g, wasUnread } = model.applyDelete(frame);
  if (!g) return;
  if (wasUnread === null) recountUnread(g); // not held: the server's pages say
  ui.changed(g, frame.seq);
  ui.render();
}

function onTyping(frame) {
  if (!model.hasGroup(frame.group) || frame.user === model.me()) return;
  presence.startTyping(frame.group, frame.user);
  ui.live();
}

function onPresence(frame) {
  presence.setOnline(frame.user, frame.online);
  ui.live();
}

// Edits our message `seq` of `group`; the `edited` reply applies the body here at once (the
// `msg_edited` push that follows changes nothing more).
export function editMessage(group, seq, body, onReply) {
  return request({ type: 'edit', group, seq, body }, (reply) => {
    if (reply.type === 'edited') {
      const g = model.group(group);
      const m = g && g.msgs.get(seq);
      // The `msg_edited` that follows brings the server's time; until then "edited" shows.
      if (m) model.applyEdit({ group, seq, body, edited_ts: Math.max(m.edited_ts || 0, 1) });
      if (g) ui.changed(g, seq);
      ui.render();
    }
    onReply(reply);
  });
}

// Deletes message `seq` of `group` (ours, or anyone's as an owner or admin).
export function deleteMessage(group, seq, onReply) {
  return request({ type: 'delete', group, seq }, (reply) => {
    if (reply.type === 'deleted') onDeleted({ group, seq });
    onReply(reply);
  });
}

// The user types in `group`: `typing` goes out, at most once per 2 s.
export function announceTyping(group) {
  if (!online || !model.hasGroup(group) || !presence.mayAnnounceTyping(group)) return;
  sendFrame({ type: 'typing', group });
}

// Renames a group; the `group_updated` reply renames it here like the push does.
export function renameGroup(group, name, onReply) {
  return request({ type: 'rename_group', group, name }, (reply) => {
    if (reply.type === 'group_updated') onGroupUpdated(reply);
    onReply(reply);
  });
}

// Sets a group's receipt policy; the `group_updated` reply applies it here like the push does.
export function setReceipts(group, receipts, onReply) {
  return request({ type: 'set_receipts', group, receipts }, (reply) => {
    if (reply.type === 'group_updated') onGroupUpdated(reply);
    onReply(reply);
  });
}

// Leaves a group; the `left` reply removes it here like the push does.
export function leaveGroup(group, onReply) {
  return request({ type: 'leave', group }, (reply) => {
    if (reply.type === 'left') onLeft(reply);
    onReply(reply);
  });
}

// Asks for a group's members; `onReply` gets the reply (a `members` frame or an error).
export function members(group, onReply) {
  return request({ type: 'members', group }, (reply) => {
    if (reply.type === 'members') onMembers(reply);
    onReply(reply);
  });
}

// A request about a group's membership (add_member, remove_member, set_role): its `members`
// reply updates our role like any other.
export function changeMembers(frame, onReply) {
  return request(frame, (reply) => {
    if (reply.type === 'members') onMembers(reply);
    onReply(reply);
  });
}

// ---- fetching messages ---------------------------------------------------------------------

// A group is shown: its first page the first time, what it misses since afterwards.
export function refresh(g) {
  if (!g.loaded) loadFirst(g); else catchUp(g);
}

// Loads a group the first time it is shown: the page that holds the first unread message
// (with a few read ones above it) when there are unread messages, else the latest page.
function loadFirst(g) {
  if (g.loaded || g.syncing) return;
  const frame = { type: 'history', group: g.id, limit: PAGE };
  const latest = !(g.unread > 0 && g.read + 1 + PAGE - CONTEXT <= g.lastSeq);
  if (!latest) frame.before = g.read + 1 + PAGE - CONTEXT;
  g.syncing = request(frame, (page) => {
    g.syncing = false;
    if (page.type !== 'messages') return;
    model.takeFirstPage(g, page, latest);
    afterPage(g, page.messages);
    if (g.high < g.lastSeq) catchUp(g);
    ui.render({ opened: model.activeId() === g.id });
  });
}

// Fills everything between what the group holds and its head, page by page.
function catchUp(g) {
  if (g.syncing || !g.loaded) return;
  g.syncing = request({ type: 'sync', group: g.id, after: g.high, limit: SYNC_PAGE }, (page) => {
    g.syncing = false;
    if (page.type !== 'messages') return;
    model.takeSyncPage(g, page);
    afterPage(g, page.messages);
    if (page.messages.length && (page.more || g.high < g.lastSeq)) catchUp(g);
    model.countUnreadExactly(g);
    ui.render();
  });
}

// Loads older pages until message `seq` is held, then calls `done` (a reply's quote was
// clicked). `done` gets false when it cannot be loaded (offline, or the page did not reach it).
export function loadBackTo(g, seq, done) {
  if (!g.loaded) {
    done(false);
    return;
  }
  if (g.low <= seq) {
    done(true);
    return;
  }
  if (!g.moreBefore) {
    done(false);
    return;
  }
  if (g.syncing) {
    setTimeout(() => loadBackTo(g, seq, done), 100);
    return;
  }
  g.syncing = request({ type: 'history', group: g.id, before: g.low, limit: PAGE }, (page) => {
    g.syncing = false;
    if (page.type !== 'messages') {
      done(false);
      return;
    }
    model.takeOlderPage(g, page);
    afterPage(g, page.messages);
    ui.render({ keepScroll: true });
    if (!page.messages.length) done(g.low <= seq); else loadBackTo(g, seq, done);
  });
  if (!g.syncing) done(false);
}

export function loadOlder(g) {
  if (!g.loaded || !g.moreBefore || g.syncing) return;
  g.syncing = request({ type: 'history', group: g.id, before: g.low, limit: PAGE }, (page) => {
    g.syncing = false;
    if (page.type !== 'messages') return;
    model.takeOlderPage(g, page);
    afterPage(g, page.messages);
    ui.render({ keepScroll: true });
  });
}

// After any page: acknowledge delivery and fetch the receipt counts of our own messages.
function afterPage(g, messages) {
  if (!messages.length) return;
  scheduleAck(g, messages[messages.length - 1].seq);
  pullReceipts(g, model.ownSeqs(messages));
}

function pullReceipts(g, seqs) {
  if (g.policy === 'off') return; // refused with receipts_off: there are none to show
  for (let i = 0; i < seqs.length; i += 1000) {
    const chunk = seqs.slice(i, i + 1000);
    request({ type: 'receipts', group: g.id, seqs: chunk }, (reply) => {
      if (reply.type !== 'receipts') return;
      model.setReceipts(g, reply.items);
      ui.render();
    });
  }
}

// ---- cursors: ack and read, batched --------------------------------------------------------

// After the read mark moved (here or in another tab): the count, from a `sync` page of what
// follows the mark (plus what was pushed since) when the group does not hold it all.
function recountUnread(g) {
  if (!model.countUnreadExactly(g)) {
    const read = g.read;
    request({ type: 'sync', group: g.id, after: read, limit: 1000 }, (page) => {
      if (page.type !== 'messages') return;
      if (model.countUnreadFrom(g, read, page.messages)) ui.render();
    });
  }
}

// Read up to `seq` on this page (a message on screen). False when the mark did not move.
export function readUpTo(g, seq) {
  if (!model.markRead(g, seq)) return false;
  recountUnread(g);
  scheduleRead(g);
  return true;
}

function scheduleAck(g, seq) {
  g.ackWanted = Math.max(g.ackWanted, seq);
  if (g.ackTimer) return;
  g.ackTimer = setTimeout(() => {
    g.ackTimer = null;
    if (g.ackWanted > g.ackSent && sendFrame({ type: 'ack', group: g.id, seq: g.ackWanted })) {
      g.ackSent = g.ackWanted;
    }
  }, ACK_DELAY_MS);
}

// Mark as unread: what was seen is read first (the server keeps the order of a session's
// frames), then the flag is set; nothing is read here again until the user opens it.
export function markUnread(g) {
  clearTimeout(g.readTimer);
  g.readTimer = null;
  if (g.read > g.readSent && sendFrame({ type: 'read', group: g.id, seq: g.read })) {
    g.readSent = g.read;
  }
  if (sendFrame({ type: 'mark_unread', group: g.id })) model.setMarkedUnread(g, true);
}

// The user opened a conversation marked unread: any `read` clears the flag, also one at the
// mark it already has.
export function clearMarkedUnread(g) {
  if (!g.markedUnread) return;
  if (sendFrame({ type: 'read', group: g.id, seq: g.read })) model.setMarkedUnread(g, false);
}

function scheduleRead(g) {
  if (g.readTimer) return;
  g.readTimer = setTimeout(() => {
    g.readTimer = null;
    if (g.read > g.readSent && sendFrame({ type: 'read', group: g.id, seq: g.read })) {
      g.readSent = g.read;
      model.setMarkedUnread(g, false); // any `read` clears the flag
    }
  }, READ_DELAY_MS);
}

// ---- sending -------------------------------------------------------------------------------

function randomId() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return `w-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

function transmit(entry) {
  const frame = { type: 'send', group: entry.group, client_id: entry.client_id, body: entry.body };
  if (entry.remind_after_secs) frame.remind_after_secs = entry.remind_after_secs;
  if (entry.reply_to) frame.reply_to = entry.reply_to;
  request(frame, (reply) => onSendReply(entry, reply));
}

function onSendReply(entry, reply) {
  const g = model.group(entry.group);
  if (reply.type === 'sent') {
    model.dropFromOutbox(entry.group, entry.client_id);
    if (g && g.loaded) {
      model.takeSent(g, entry, reply);
      if (g.high < g.lastSeq) catchUp(g);
      pullReceipts(g, [reply.seq]);
    }
  } else if (reply.type === 'error' && ['busy', 'rate_limited', 'storage'].includes(reply.code)) {
    // Nothing was stored: send again later with the same client_id.
    const wait = Math.max(reply.retry_after_ms || 0, 1000);
    setTimeout(() => { if (model.isQueued(entry)) transmit(entry); }, wait);
  } else if (reply.type === 'error') {
    model.markFailed(entry, reply.message || reply.code);
  }
  ui.render();
}

// Sends `body` to the open conversation (queued in the outbox first); `remindAfter`: remind
// those who have not seen it after that many seconds (null: never); `replyTo`: the seq it
// answers (null: none).
export function sendMessage(body, remindAfter, replyTo) {
  const group = model.activeId();
  if (!group || body.trim() === '') return;
  const entry = model.queue(group, randomId(), body, remindAfter, replyTo);
  transmit(entry); // when offline, the welcome after the reconnect sends it
  ui.render({ scrollToEnd: true });
}
