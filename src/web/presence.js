// Who is online and who is typing where: ephemeral state the server never stores, so neither
// is kept across a reload. No DOM (view.js draws it).
// - online comes from `members` replies (each entry's `online`) and `presence {user, online}`
//   pushes; a user never heard of is unknown (no dot), not offline;
// - typing comes from `typing {group, user}` pushes and lasts TYPING_SHOW_MS, or until that
//   user's next message in the group arrives;
// - our own `typing` is sent at most once per TYPING_SEND_MS per group (the server forwards
//   no more than that anyway).

export const TYPING_SHOW_MS = 5000;
export const TYPING_SEND_MS = 2000;

const online = new Map(); // user id -> bool
const typing = new Map(); // group id -> Map(user id -> expiry, ms since the epoch)
const lastSent = new Map(); // group id -> when we last sent `typing`

// true, false, or undefined (unknown).
export function isOnline(user) {
  return online.get(user);
}

export function setOnline(user, isOn) {
  online.set(user, Boolean(isOn));
}

// A `typing` push: `user` types in `group` from now on, for a while.
export function startTyping(group, user, now = Date.now()) {
  if (!typing.has(group)) typing.set(group, new Map());
  typing.get(group).set(user, now + TYPING_SHOW_MS);
}

// Their message arrived: they are done typing it.
export function stopTyping(group, user) {
  const users = typing.get(group);
  if (users) users.delete(user);
}

// Who types in `group` now, in the order they started.
export function typingIn(group, now = Date.now()) {
  const users = typing.get(group);
  if (!users) return [];
  for (const [user, until] of [...users]) if (until <= now) users.delete(user);
  return [...users.keys()];
}

// The next time a typing indicator runs out (for a timer), or null.
export function nextExpiry() {
  let next = null;
  for (const users of typing.values()) {
    for (const until of users.values()) if (next === null || until < next) next = until;
  }
  return next;
}

// Whether our own `typing` may go out for `group` now (and if so, counts it as sent).
export function mayAnnounceTyping(group, now = Date.now()) {
  const last = lastSent.get(group);
  if (last !== undefined && now - last < TYPING_SEND_MS) return false;
  lastSent.set(group, now);
  return true;
}

// After a reconnect: nobody's typing survives it, and presence is asked again.
export function reset() {
  typing.clear();
  lastSent.clear();
}

export function clear() {
  online.clear();
  reset();
}
