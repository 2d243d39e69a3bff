// Telling the user about a message while they are not looking: desktop notifications (the
// Notification API), the per-conversation mute, and the unread count in the tab title.
// - the permission is asked only from a click on "Turn on desktop notifications", never on
//   load (browsers block, and users resent, a prompt nobody asked for);
// - a notification is shown for a direct message or a message that mentions you (`@<id>`),
//   from someone else, in a conversation that is not muted, while the page is hidden or not
//   focused (rejected: every group message, which is what makes people turn them all off);
// - mutes are kept in localStorage per user, so they survive a reload and are shared by the
//   user's tabs; a muted conversation neither notifies nor counts in the title;
// - every notification the browser showed (its `show` event) is counted on <html>
//   (`data-notifications`, and `data-last-notification` = its title and body), which the
//   page's tests read.

import * as model from './model.js';
import * as format from './format.js';

const MUTE_KEY = 'rollcall.muted';

let muted = new Set(); // group ids muted by the signed-in user
let mutedFor = null; // whose mutes `muted` holds
let onOpen = null; // view.js's openGroup, from wire()
const shownNow = new Map(); // group id -> the Notification on screen for it

function loadMutes() {
  const user = model.me();
  if (user === mutedFor) return;
  mutedFor = user;
  muted = new Set();
  try {
    const all = JSON.parse(localStorage.getItem(MUTE_KEY) || '{}');
    if (user && Array.isArray(all[user])) muted = new Set(all[user]);
  } catch (e) { /* unreadable or disabled: nothing muted */ }
}

function saveMutes() {
  try {
    const all = JSON.parse(localStorage.getItem(MUTE_KEY) || '{}');
    all[mutedFor] = [...muted];
    localStorage.setItem(MUTE_KEY, JSON.stringify(all));
  } catch (e) { /* storage disabled: the mute lasts for this page */ }
}

export function isMuted(id) {
  loadMutes();
  return muted.has(id);
}

export function setMuted(id, mute) {
  loadMutes();
  if (mute) muted.add(id); else muted.delete(id);
  saveMutes();
}

export function supported() {
  return typeof Notification !== 'undefined';
}

// 'granted' | 'denied' | 'default' | 'unsupported'.
export function permission() {
  return supported() ? Notification.permission : 'unsupported';
}

// Asks for the permission (from a click). Resolves to the permission afterwards.
export async function askPermission() {
  if (!supported()) return 'unsupported';
  try {
    return await Notification.requestPermission();
  } catch (e) {
    return Notification.permission;
  }
}

function looking() {
  return document.visibilityState === 'visible' && document.hasFocus();
}

// A new message from someone else (a `msg` push): a notification when it is worth one.
export function message(m, g) {
  if (m.from === model.me() || m.deleted || permission() !== 'granted') return;
  if (looking() || isMuted(g.id)) return;
  const direct = g.kind === 'direct';
  if (!direct && !format.mentions(m.body, model.me())) return;
  const from = model.displayName(m.from);
  const title = direct ? from : `${from} in ${model.groupTitle(g)}`;
  const body = format.excerpt(m.body);
  let notification;
  try {
    // One per conversation on screen: a newer one replaces it (`tag`).
    notification = new Notification(title, { body, tag: `rollcall-${g.id}` });
  } catch (e) {
    return; // e.g. Android Chrome allows them only from a service worker
  }
  notification.addEventListener('show', () => {
    const root = document.documentElement;
    root.dataset.notifications = String(Number(root.dataset.notifications || 0) + 1);
    root.dataset.lastNotification = `${title}\n${body}`;
  });
  shownNow.set(g.id, notification);
  notification.addEventListener('click', () => {
    window.focus();
    if (onOpen) onOpen(g.id);
    notification.close();
  });
  notification.addEventListener('close', () => {
    if (shownNow.get(g.id) === notification) shownNow.delete(g.id);
  });
}

// The conversation was opened (or read): its notification goes.
export function seen(id) {
  const notification = shownNow.get(id);
  if (notification) notification.close();
}

// The tab title: "(3) Rollcall" while unread messages wait (muted conversations left out).
export function updateTitle() {
  let unread = 0;
  for (const g of model.allGroups()) if (!isMuted(g.id)) unread += g.unread;
  const title = unread > 0 ? `(${unread}) Rollcall` : 'Rollcall';
  if (document.title !== title) document.title = title;
  document.documentElement.dataset.unread = String(unread);
}

// After signing out: no title count, no notification left, the next user's mutes.
export function clear() {
  for (const notification of shownNow.values()) notification.close();
  shownNow.clear();
  mutedFor = null;
  muted = new Set();
  document.title = 'Rollcall';
  document.documentElement.dataset.unread = '0';
}

export function wire(actions) {
  onOpen = actions.open;
}
