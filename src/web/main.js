// Rollcall's built-in web client: plain JavaScript modules, no dependencies, no build step.
//
// This is its entry point (index.html loads it as a module). It owns the user token (from a
// login link or the sign-in form, kept for the tab in sessionStorage) and wires the three
// other modules together:
// - model.js: the state (conversations, messages, cursors, receipts, outbox), no DOM;
// - connection.js: the WebSocket protocol client (docs/PROTOCOL.md), no DOM;
// - view.js: the DOM, rendering and the page's controls.

import * as model from './model.js';
import * as connection from './connection.js';
import * as view from './view.js';

const TOKEN_KEY = 'rollcall.token';

function start(token) {
  model.loadOutbox();
  view.showApp();
  connection.start(token);
}

function signIn(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  start(token);
}

function signOut(message) {
  connection.stop();
  model.clear();
  sessionStorage.removeItem(TOKEN_KEY);
  view.showSignedOut(message);
}

connection.init({
  status: view.setConnection,
  welcome: view.showUser,
  users: view.listUsers,
  render: view.render,
  announce: view.announce,
  receipts: view.receiptsChanged,
  open: view.openGroup,
  reminder: view.reminder,
  reminded: view.reminded,
  groupUpdated: view.groupUpdated,
  refused: () => signOut('The server refused this token (expired or invalid). Paste another one.'),
});
view.wire({ signIn, signOut: () => signOut() });

// A token in the URL (a login link) is remembered for this tab and removed from the address
// bar, so it does not end up in bookmarks or screenshots.
const fromUrl = new URLSearchParams(location.search).get('token');
if (fromUrl) {
  sessionStorage.setItem(TOKEN_KEY, fromUrl);
  history.replaceState(null, '', location.pathname);
}
const token = fromUrl || sessionStorage.getItem(TOKEN_KEY);
if (token) {
  start(token);
} else {
  view.askForToken();
}
