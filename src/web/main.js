// Rollcall's built-in web client: plain JavaScript modules, no dependencies, no build step.
//
// This is its entry point (index.html loads it as a module). It owns the user token and wires
// the other modules together:
// - model.js: the state (conversations, messages, cursors, receipts, outbox), no DOM;
// - connection.js: the WebSocket protocol client (docs/PROTOCOL.md), no DOM;
// - view.js: the DOM, rendering and the page's controls (with dialog.js and groups.js; the
//   message formatting is format.js's, presence and typing presence.js's, desktop
//   notifications, mutes and the title notify.js's);
// - account.js: the sign-in form, "Change password" and "Sign out"; api.js: HTTP calls.
//
// The token comes from the sign-in form (POST /api/login), a token link (`/?token=`), a one-time
// sign-in link (`/?link=`, exchanged with POST /api/login {"link"}) or a pasted token. It is
// kept in localStorage, so other tabs and the next visit stay signed in until "Sign out"
// forgets it; a token in the address bar is removed from it at once (history.replaceState), so
// it does not end up in bookmarks, the history or screenshots. (Rejected: sessionStorage,
// which signs every new tab out, and loses a one-time link's session with its tab.)
//
// It also keeps the list of further servers (`/?servers=`, see serverList) in localStorage and
// hands it to connection.js, which goes round them when its own server fails.

import * as model from './model.js';
import * as connection from './connection.js';
import * as view from './view.js';
import * as account from './account.js';
import * as api from './api.js';

const TOKEN_KEY = 'rollcall.token';
const SERVERS_KEY = 'rollcall.servers';

let token = null; // the token in use, or null while signed out
let user = null; // the signed-in user, from `welcome` or the login answer
let pastedToken = false; // the token in use was pasted into the form (refusals say so there)
let changing = false; // a password change is in flight

function storeToken(value) {
  try {
    if (value) localStorage.setItem(TOKEN_KEY, value); else localStorage.removeItem(TOKEN_KEY);
  } catch (e) { /* storage disabled: the token lives for this page only */ }
}

function storedToken() {
  try {
    return localStorage.getItem(TOKEN_KEY);
  } catch (e) {
    return null;
  }
}

// The servers besides this page's own (`?servers=host:port,wss://host/ws`, connection.js): a
// list in the address is remembered in localStorage, so the next visit without it still has
// it; `?servers=` (empty) forgets it.
function serverList(given) {
  try {
    if (given === null) return localStorage.getItem(SERVERS_KEY) || '';
    if (given.trim()) localStorage.setItem(SERVERS_KEY, given); else localStorage.removeItem(SERVERS_KEY);
  } catch (e) { /* storage disabled: the list holds for this page only */ }
  return given || '';
}

function start(value) {
  token = value;
  storeToken(value);
  model.loadOutbox();
  account.hideSignIn();
  view.showApp();
  connection.start(value);
}

// Back to the sign-in form; `message` says why (none: the user signed out). A refused token is
// forgotten only if it is still the stored one (another tab may have stored a newer one).
function signOut(message, options) {
  const dropped = token;
  token = null;
  user = null;
  connection.stop();
  model.clear();
  if (!message || storedToken() === dropped) storeToken(null);
  view.clearApp();
  account.showSignIn(message, options);
}

async function login(name, password) {
  const reply = await api.call('POST', '/api/login', { body: { user: name, password } });
  if (!reply.ok || !reply.body || !reply.body.token) return reply;
  user = reply.body.user;
  start(reply.body.token);
  return null;
}

// The server closes this user's sockets with 4001 once the password changed: the connection
// waits for the new token instead of signing out (connection.expectNewToken).
async function changePassword(old, fresh) {
  const body = { new: fresh };
  if (old) body.old = old;
  connection.expectNewToken(true);
  changing = true;
  const reply = await api.call('POST', '/api/me/password', { token, body });
  changing = false;
  if (!reply.ok || !reply.body || !reply.body.token) {
    connection.expectNewToken(false);
    return reply;
  }
  token = reply.body.token;
  storeToken(token);
  connection.replaceToken(token);
  connection.expectNewToken(false);
  return null;
}

// A one-time sign-in link: exchanged for a token once; a second use is refused.
async function exchangeLink(link) {
  const reply = await api.call('POST', '/api/login', { body: { link } });
  if (reply.ok && reply.body && reply.body.token) {
    user = reply.body.user;
    start(reply.body.token);
  } else if (reply.status === 0) {
    account.showSignIn('The server cannot be reached to use this sign-in link. Open the link again later.');
  } else {
    account.showSignIn('This sign-in link was already used, has expired or was revoked. Ask your administrator for a new one, or sign in with your password.');
  }
}

// Closed with 4001, or the upgrade refused (401): the reason, in words.
function unauthorizedText(reason) {
  const why = (reason || '').toLowerCase();
  if (why.includes('deactivat')) {
    return 'Your account was deactivated by an administrator, so you were signed out.';
  }
  if (why.includes('password')) {
    return 'Your password was changed (in another window or by an administrator), so you were signed out. Sign in with the new password.';
  }
  if (why.includes('revok')) {
    return 'An administrator ended your sessions (revoked), so you were signed out. Sign in again.';
  }
  return 'The server ended this session: your sessions were revoked, your password changed or your account deactivated. Sign in again.';
}

connection.init({
  status: view.setConnection,
  welcome: (id) => {
    user = id;
    view.showUser(id);
    view.welcomed();
  },
  users: view.listUsers,
  render: view.render,
  announce: view.announce,
  receipts: view.receiptsChanged,
  open: view.openGroup,
  reminder: view.reminder,
  reminded: view.reminded,
  groupUpdated: view.groupUpdated,
  joined: view.joined,
  left: view.left,
  restored: view.restored,
  changed: view.changed,
  members: view.membersArrived,
  live: view.live,
  refused: () => {
    const pasted = pastedToken;
    signOut('The server refused this token: it expired or is invalid, the sessions were revoked, or the account was deactivated. Sign in again.', { tokenForm: pasted });
  },
  unauthorized: (reason) => {
    // Another tab of this browser may have changed the password and stored the new token.
    const stored = storedToken();
    if (stored && stored !== token) {
      start(stored);
      return;
    }
    signOut(unauthorizedText(reason));
  },
});

view.wire();
account.wire({
  login: (name, password) => {
    pastedToken = false;
    return login(name, password);
  },
  changePassword,
  signInWithToken: (value) => {
    pastedToken = true;
    start(value);
  },
  signOut: () => signOut(),
  me: () => user,
});

// Other tabs: a sign-in there (or a new token after a password change) signs this signed-out
// tab in; a sign-out there signs this one out.
window.addEventListener('storage', (event) => {
  if (event.key !== TOKEN_KEY) return;
  if (event.newValue && !token) start(event.newValue);
  else if (!event.newValue && token && !changing) signOut();
});

const params = new URLSearchParams(location.search);
connection.setServers(serverList(params.get('servers')));
const fromUrl = params.get('token');
const link = params.get('link');
// (The open conversation's `#/c/<group>` stays: a token link may name one.)
if (fromUrl || link) history.replaceState(null, '', location.pathname + location.hash);
if (link) {
  exchangeLink(link);
} else if (fromUrl || storedToken()) {
  start(fromUrl || storedToken());
} else {
  account.showSignIn('');
  view.setConnection('offline', 'Signed out');
}
