// The web client's state, and nothing else: no DOM, no WebSocket.
//
// It owns the signed-in user, the conversations (one record per group: cursors, unread count,
// messages, receipts, receipt policy, reminders, the "marked unread" flag, one's role and the
// last member list seen), the open conversation, the people (ids and display names) and the
// outbox. Other
// modules read it through the functions below and change it only through them, except for a
// group record's connection bookkeeping (see newGroup), which connection.js keeps.
// - messages are kept per group in a Map keyed by seq, so a message is never stored twice
//   (a push, a sync page and a history page may all carry it); of two versions the newer one
//   is kept (a deletion is final, then the later `edited_ts`), and a deleted message keeps
//   only its seq, sender and time, so it never counts as unread;
// - a welcome that lists only some groups is completed by `groups` pages (takeListed, then
//   endListing); a group is dropped only when the whole listing left it out;
// - the outbox holds sends not yet answered by `sent`, also in sessionStorage so a reload of
//   the tab keeps them;
// - a reminder is kept until the read mark reaches its seq (the server drops it then too), and
//   the words under one's own message come from receiptText() so they add up the same way
//   everywhere.

const OUTBOX_KEY = 'rollcall.outbox';

let user = null; // the signed-in user's id, from `welcome`
let active = null; // the open group id
let outbox = []; // {group, client_id, body, remind_after_secs?, reply_to?, failed?}: not yet `sent`
let openWhenJoined = null; // a direct conversation asked for, waiting for its `joined`
const groups = new Map(); // group id -> group (see newGroup)
const summarized = new Set(); // group ids this connection has a summary of, or saw go
const listedReminders = new Map(); // group id -> the welcome's reminders, until it is listed
const names = new Map(); // user id -> display name
let people = []; // [{id, name}] from the `users` pages, in id order (deactivated users excluded)

function newGroup(summary) {
  return {
    id: summary.group,
    name: summary.name,
    kind: summary.kind,
    lastSeq: summary.last_seq,
    delivered: summary.delivered,
    read: summary.read,
    unread: summary.unread,
    msgs: new Map(), // seq -> message
    loaded: false, // the latest page was fetched; msgs then hold low..high without gaps
    low: 0,
    high: 0,
    moreBefore: false,
    receipts: new Map(), // seq -> {recipients, delivered, read}
    policy: summary.receipts || 'full', // the receipt policy: 'full' | 'counts' | 'off'
    role: summary.role || 'member', // ours: 'owner' | 'admin' | 'member'
    members: null, // [{user, name, role, joined_seq}] from the last `members` frame, or null
    markedUnread: Boolean(summary.marked_unread),
    reminders: new Map(), // seq -> reminder frame: someone asked us to read that message
    othersSeen: new Set(), // seqs from others pushed while not loaded (for unread counts)
    ackSent: summary.delivered, // the delivery mark the server has (from here or welcome)
    readSent: summary.read, // the read mark the server has (from here, welcome or read_sync)
    // The connection's bookkeeping, kept by connection.js:
    syncing: false, // a history or sync request of this group is in flight
    ackWanted: 0,
    ackTimer: null,
    readTimer: null,
  };
}

// ---- who, what is open ---------------------------------------------------------------------

export function me() {
  return user;
}

export function activeId() {
  return active;
}

export function activeGroup() {
  return groups.get(active);
}

export function setActive(id) {
  active = id;
}

export function group(id) {
  return groups.get(id);
}

export function hasGroup(id) {
  return groups.has(id);
}

export function allGroups() {
  return [...groups.values()];
}

export function displayName(id) {
  return names.get(id) || id;
}

export function groupTitle(g) {
  if (g.kind === 'direct') {
    const parts = g.id.split(':'); // dm:<a>:<b>
    const other = parts[1] === user ? parts[2] : parts[1];
    return displayName(other || g.name);
  }
  return g.name;
}

// Groups first, then direct conversations, each by title.
export function sortedGroups() {
  return [...groups.values()].sort((a, b) => {
    if (a.kind !== b.kind) return a.kind === 'group' ? -1 : 1;
    return groupTitle(a).localeCompare(groupTitle(b));
  });
}

// ---- what the server says ------------------------------------------------------------------

// Takes a `welcome`: known groups keep their messages and take the server's cursors and
// pending reminders, new ones are added. Returns the groups whose read mark here is ahead of
// the server's (lost with the connection): their `read` must be sent again. A welcome may list
// only the most recently active groups (`more_groups`): the others come in `groups` pages
// (takeListed), and endListing() then drops the groups no longer listed.
export function welcome(frame) {
  user = frame.user;
  summarized.clear();
  // The user's pending reminders in all of their groups (older servers send none), taken by
  // each group as its summary comes.
  listedReminders.clear();
  for (const reminder of frame.reminders || []) {
    if (!listedReminders.has(reminder.group)) listedReminders.set(reminder.group, []);
    listedReminders.get(reminder.group).push(reminder);
  }
  const readAhead = [];
  for (const summary of frame.groups) {
    const taken = takeListed(summary);
    if (taken && taken.readAhead) readAhead.push(taken.g);
  }
  return readAhead;
}

// One group's summary from this connection's `welcome` or one of its `groups` pages, taken as
// from `welcome`. Returns {g, readAhead} (readAhead: the read mark here is ahead of the
// server's and must be sent again), or null when this connection already has a summary of it
// (the welcome's, or a `joined`) or saw it go (a `left`): that, and the pushes since, are newer
// than a page.
export function takeListed(summary) {
  if (summarized.has(summary.group)) return null;
  summarized.add(summary.group);
  let g = groups.get(summary.group);
  let readAhead = false;
  if (!g) {
    g = newGroup(summary);
    groups.set(summary.group, g);
  } else {
    g.name = summary.name;
    g.policy = summary.receipts || 'full';
    g.role = summary.role || 'member';
    g.markedUnread = Boolean(summary.marked_unread);
    g.lastSeq = Math.max(g.lastSeq, summary.last_seq);
    g.delivered = Math.max(g.delivered, summary.delivered);
    g.ackSent = summary.delivered;
    g.readSent = summary.read;
    g.othersSeen.clear();
    readAhead = g.read > summary.read;
    if (!readAhead) {
      g.read = summary.read;
      g.unread = summary.unread;
    }
  }
  // Its pending reminders are the server's list.
  g.reminders.clear();
  for (const reminder of listedReminders.get(g.id) || []) addReminder(reminder);
  return { g, readAhead };
}

// Whether this connection has a summary of the group yet (from `welcome`, a `groups` page or
// `joined`), or saw it go.
export function isSummarized(id) {
  return summarized.has(id);
}

// Every group of the user is listed now (the welcome's, then every `groups` page): when the
// listing is `complete`, the groups it did not list are gone (left or deleted while offline).
export function endListing(complete) {
  if (complete) {
    for (const id of [...groups.keys()]) {
      if (!summarized.has(id)) groups.delete(id);
    }
  }
  listedReminders.clear();
  if (active && !groups.has(active)) active = null;
}

// The people (every page of `users`).
export function setUsers(users) {
  people = users;
  for (const u of users) names.set(u.id, u.name);
}

export function users() {
  return people;
}

// Whether we may manage the group (rename, members, roles): owners and admins.
export function canManage(g) {
  return g.kind === 'group' && (g.role === 'owner' || g.role === 'admin');
}

// A `members` frame: the list, its names, and our own role in it.
export function setMembers(id, members) {
  const g = groups.get(id);
  if (!g) return;
  g.members = members;
  for (const m of members) {
    if (m.name) names.set(m.user, m.name);
    if (m.user === user) g.role = m.role;
  }
}

// A `joined`: the group is added unless known.
export function addGroup(summary) {
  summarized.add(summary.group);
  if (!groups.has(summary.group)) groups.set(summary.group, newGroup(summary));
}

// A `group_updated`: the name, the receipt policy and (when it changed) our role, live.
export function updateGroup(frame) {
  const g = groups.get(frame.group);
  if (!g) return null;
  g.name = frame.name;
  g.policy = frame.receipts || 'full';
  if (frame.role) g.role = frame.role; // only to the member whose role changed
  return g;
}

// A `reminder` (pushed, or listed in `welcome`): its group, or null when it is already read.
export function addReminder(reminder) {
  const g = groups.get(reminder.group);
  if (!g || reminder.seq <= g.read) return null;
  g.reminders.set(reminder.seq, reminder);
  return g;
}

// The "marked unread" flag (ours, or from `read_sync`).
export function setMarkedUnread(g, marked) {
  g.markedUnread = marked;
}

// A `left` (a `groups` page answered before it may still list the group: it is ignored).
export function removeGroup(id) {
  summarized.add(id);
  groups.delete(id);
  if (active === id) active = null;
}

// A direct conversation asked for: open it when its `joined` arrives.
export function openWhenJoinedIs(id) {
  openWhenJoined = id;
}

// True (once) when `id` is the direct conversation waiting for its `joined`.
export function takeOpenWhenJoined(id) {
  if (openWhenJoined !== id) return false;
  openWhenJoined = null;
  return true;
}

// ---- messages ------------------------------------------------------------------------------

// Which of two versions of one message is the newer: a deletion is final, then the later
// edit wins (a page answered before an edit may arrive after its `msg_edited`).
function newer(held, incoming) {
  if (!held) return incoming;
  if (held.deleted) return held;
  if (incoming.deleted) return incoming;
  return (incoming.edited_ts || 0) >= (held.edited_ts || 0) ? incoming : held;
}

// Adds messages to a loaded group, keyed by seq: whatever arrives twice is stored once (its
// newest version).
function insertMessages(g, messages) {
  for (const m of messages) {
    g.msgs.set(m.seq, newer(g.msgs.get(m.seq), m));
    if (g.low === 0 || m.seq < g.low) g.low = m.seq;
    if (m.from === user) dropFromOutbox(g.id, m.client_id);
  }
  while (g.msgs.has(g.high + 1)) g.high += 1;
}

// A pushed `msg`. True when it is another's message above the read mark (a new unread one).
export function receive(g, m) {
  g.lastSeq = Math.max(g.lastSeq, m.seq);
  if (m.from === user) dropFromOutbox(m.group, m.client_id);
  if (g.loaded) insertMessages(g, [m]);
  if (m.from !== user && m.seq > g.read) {
    g.othersSeen.add(m.seq);
    if (!countUnreadExactly(g)) g.unread += 1;
    return true;
  }
  return false;
}

// The first page of a group (`history`): the group is loaded from now on. `latest` when it
// was asked without `before` (it ends at the head); otherwise it ends where the page ends, and
// `sync` fills the rest.
export function takeFirstPage(g, page, latest) {
  g.loaded = true;
  g.moreBefore = page.more;
  g.high = page.messages.length ? page.messages[0].seq - 1 : page.last_seq;
  g.low = page.messages.length ? page.messages[0].seq : page.last_seq + 1;
  insertMessages(g, page.messages);
  if (latest) g.high = Math.max(g.high, page.last_seq);
  g.lastSeq = Math.max(g.lastSeq, page.last_seq);
  g.othersSeen.clear();
}

// The first message from someone else after `after` among those held, or null.
export function firstUnreadSeq(g, after) {
  let first = null;
  for (const m of g.msgs.values()) {
    if (m.seq > after && m.from !== user && !m.deleted && (first === null || m.seq < first)) {
      first = m.seq;
    }
  }
  return first;
}

// A `sync` page of what follows `high`.
export function takeSyncPage(g, page) {
  g.lastSeq = Math.max(g.lastSeq, page.last_seq);
  insertMessages(g, page.messages);
}

// A `history` page of what precedes `low`.
export function takeOlderPage(g, page) {
  g.moreBefore = page.more;
  insertMessages(g, page.messages);
}

// Our own message, stored by the server at `reply.seq` (a `sent`).
export function takeSent(g, entry, reply) {
  const m = { group: entry.group, seq: reply.seq, from: user, ts: reply.ts,
    body: entry.body, client_id: entry.client_id };
  if (entry.reply_to) m.reply_to = entry.reply_to;
  insertMessages(g, [m]);
  g.lastSeq = Math.max(g.lastSeq, reply.seq);
}

// The seqs of our own messages among `messages` (deleted ones have no receipts).
export function ownSeqs(messages) {
  return messages.filter((m) => m.from === user && !m.deleted).map((m) => m.seq);
}

// A `msg_edited` (or our `edited` reply): the held message takes the new body. Null when the
// group is unknown.
export function applyEdit(frame) {
  const g = groups.get(frame.group);
  if (!g) return null;
  const m = g.msgs.get(frame.seq);
  if (m && !m.deleted && (m.edited_ts || 0) <= frame.edited_ts) {
    g.msgs.set(frame.seq, { ...m, body: frame.body, edited_ts: frame.edited_ts });
  }
  return g;
}

// A `msg_deleted` (or our `deleted` reply): the held message keeps only its seq, sender and
// time. Returns {g, wasUnread}: wasUnread is true when it was another's unread message, false
// when it was not, and null when that is not known here (the message is not held).
export function applyDelete(frame) {
  const g = groups.get(frame.group);
  if (!g) return { g: null, wasUnread: false };
  const m = g.msgs.get(frame.seq);
  let wasUnread = null;
  if (m) {
    wasUnread = !m.deleted && m.from !== user && m.seq > g.read;
    if (!m.deleted) {
      g.msgs.set(frame.seq, { group: m.group, seq: m.seq, from: m.from, ts: m.ts,
        client_id: m.client_id, deleted: true });
    }
  } else if (frame.seq <= g.read) {
    wasUnread = false;
  } else if (g.othersSeen.has(frame.seq)) {
    wasUnread = true;
  }
  g.othersSeen.delete(frame.seq);
  g.receipts.delete(frame.seq);
  g.reminders.delete(frame.seq);
  if (wasUnread && !countUnreadExactly(g)) g.unread = Math.max(0, g.unread - 1);
  return { g, wasUnread };
}

// Whether we may edit message `m` (our own, not deleted).
export function canEdit(m) {
  return m.from === user && !m.deleted;
}

// Whether we may delete message `m`: our own, or anyone's as a group owner or admin.
export function canDelete(g, m) {
  if (m.deleted) return false;
  return m.from === user || (g.kind === 'group' && (g.role === 'owner' || g.role === 'admin'));
}

export function setReceipts(g, items) {
  for (const item of items) g.receipts.set(item.seq, item);
}

// The words under one's own message. They add up: "Seen by 3 of 5 · delivered to 1 more" says
// that one of the five has neither. A direct conversation says "Sent / Delivered / Seen";
// under the policy `off` there are no counts, only "Sent".
export function receiptText(g, seq) {
  const r = g.receipts.get(seq);
  if (g.policy === 'off' || !r || r.recipients === 0) return 'Sent';
  if (g.kind === 'direct') {
    if (r.read > 0) return 'Seen';
    return r.delivered > 0 ? 'Delivered' : 'Sent';
  }
  const n = r.recipients;
  if (r.read > 0) {
    const seen = r.read === n && n > 1 ? `Seen by all ${n}` : `Seen by ${r.read} of ${n}`;
    return r.delivered > r.read ? `${seen} \u00b7 delivered to ${r.delivered - r.read} more` : seen;
  }
  if (r.delivered > 0) {
    return r.delivered === n && n > 1 ? `Delivered to all ${n}` : `Delivered to ${r.delivered} of ${n}`;
  }
  return 'Sent';
}

// What a `reminded` says, in words: who (under `full`) or how many (under `counts`).
export function remindedText(reply) {
  if (reply.count === 0) return 'Nobody to remind: everyone has seen it.';
  if (reply.users) return `Reminded ${reply.users.map(displayName).join(', ')}.`;
  return reply.count === 1 ? 'Reminded 1 person.' : `Reminded ${reply.count} people.`;
}

// ---- cursors and unread counts -------------------------------------------------------------

// Read up to `seq` here (on screen). False when the mark does not move.
export function markRead(g, seq) {
  if (seq <= g.read) return false;
  g.read = seq;
  g.delivered = Math.max(g.delivered, seq);
  dropSeenReminders(g);
  return true;
}

// Reminders end once the read mark reaches them.
function dropSeenReminders(g) {
  for (const seq of [...g.reminders.keys()]) if (seq <= g.read) g.reminders.delete(seq);
}

// A `read_sync`: read up to `seq` in another tab or client.
export function readElsewhere(g, seq) {
  if (seq > g.read) {
    g.read = seq;
    g.readSent = Math.max(g.readSent, seq);
    dropSeenReminders(g);
  }
  g.delivered = Math.max(g.delivered, seq);
}

// Unread = messages from others above the read mark. Counted here when the group holds all
// of them (or the mark is at the head); false when it cannot be.
export function countUnreadExactly(g) {
  for (const s of g.othersSeen) if (s <= g.read) g.othersSeen.delete(s);
  if (g.read >= g.lastSeq) {
    g.unread = 0;
    return true;
  }
  if (g.loaded && g.low <= g.read + 1 && g.high >= g.lastSeq) {
    let n = 0;
    for (const m of g.msgs.values()) if (m.seq > g.read && m.from !== user && !m.deleted) n += 1;
    g.unread = n;
    return true;
  }
  return false;
}

// The count from a `sync` page of what follows the read mark `read` (plus what was pushed
// since); ignored when the mark moved meanwhile.
export function countUnreadFrom(g, read, messages) {
  if (g.read !== read) return false;
  const seqs = new Set(messages.filter((m) => m.from !== user && !m.deleted).map((m) => m.seq));
  for (const s of g.othersSeen) if (s > read) seqs.add(s);
  g.unread = seqs.size;
  return true;
}

// ---- the outbox ----------------------------------------------------------------------------

function saveOutbox() {
  try {
    sessionStorage.setItem(OUTBOX_KEY, JSON.stringify(outbox));
  } catch (e) { /* storage full or disabled: the outbox still lives in memory */ }
}

// The outbox this tab kept (sessionStorage), at sign-in.
export function loadOutbox() {
  try {
    outbox = JSON.parse(sessionStorage.getItem(OUTBOX_KEY) || '[]');
  } catch (e) {
    outbox = [];
  }
}

export function outboxEntries() {
  return outbox;
}

// Whether `entry` is still waiting for its `sent` (not dropped, not signed out since).
export function isQueued(entry) {
  return outbox.includes(entry);
}

// `remindAfter`: seconds after which the non-readers are reminded (null: never); `replyTo`:
// the seq it answers (null: none).
export function queue(group, clientId, body, remindAfter, replyTo) {
  const entry = { group, client_id: clientId, body };
  if (remindAfter) entry.remind_after_secs = remindAfter;
  if (replyTo) entry.reply_to = replyTo;
  outbox.push(entry);
  saveOutbox();
  return entry;
}

export function dropFromOutbox(group, clientId) {
  const before = outbox.length;
  outbox = outbox.filter((e) => !(e.group === group && e.client_id === clientId));
  if (outbox.length !== before) saveOutbox();
}

// The server refused the send for good: it stays, marked, until discarded.
export function markFailed(entry, reason) {
  entry.failed = reason;
  saveOutbox();
}

// ---- signing out ---------------------------------------------------------------------------

export function clear() {
  groups.clear();
  summarized.clear();
  listedReminders.clear();
  active = null;
  outbox = [];
  sessionStorage.removeItem(OUTBOX_KEY);
}

// A message time: the clock today, with the date on other days.
export function formatTime(ts) {
  const date = new Date(ts);
  const today = new Date().toDateString() === date.toDateString();
  return today
    ? date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : date.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}
