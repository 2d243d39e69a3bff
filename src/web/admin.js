// The admin page (`/admin`): the server's users and groups through the admin API
// (docs/PROTOCOL.md §2), with the admin token. The token is typed into a form and kept in
// sessionStorage (this tab only, gone with it), never in the address bar, and sent only in the
// Authorization header.
// - users: a page at a time by id (`after`), create (with a password, or without one and a
//   one-time sign-in link to hand over), sign-in link, reset password, revoke (every earlier
//   token refused, sessions closed), deactivate and reactivate;
// - groups: a page at a time by id, their members, rename, delete (after a confirmation).
// Every change is answered once the server made it durable; the lists are then fetched again.

import * as api from './api.js';

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'rollcall.admin-token';
const PAGE = 20;

let adminToken = null;
// Paging by id: the `after` of each page shown so far (the first page's is '').
const users = { starts: [''], more: false };
const groups = { starts: [''], more: false };
let dialogUser = null; // the user the reset dialog is for
let dialogGroup = null; // the group the rename and delete dialogs are for

function textElement(tag, text, className) {
  const el = document.createElement(tag);
  el.textContent = text;
  if (className) el.className = className;
  return el;
}

function button(text, className, onClick) {
  const el = textElement('button', text, className);
  el.type = 'button';
  el.addEventListener('click', onClick);
  return el;
}

function errorText(reply, fallback) {
  const error = reply.body && reply.body.error;
  return (error && error.message) || fallback;
}

function status(text) {
  $('admin-status').textContent = text;
}

async function admin(method, path, body) {
  const reply = await api.call(method, path, { token: adminToken, body });
  if (reply.status === 401) signOut('The server refused the admin token.');
  return reply;
}

// ---- signing in ----------------------------------------------------------------------------

async function signIn(token) {
  const reply = await api.call('GET', `/api/users?limit=1`, { token });
  if (!reply.ok) {
    $('admin-signin-error').textContent = reply.status === 401
      ? 'That is not the admin token.' : errorText(reply, 'Could not reach the server.');
    return;
  }
  adminToken = token;
  try {
    sessionStorage.setItem(TOKEN_KEY, token);
  } catch (e) { /* storage disabled: signed in for this page only */ }
  $('admin-signin').hidden = true;
  $('admin').hidden = false;
  $('admin-sign-out').hidden = false;
  const state = $('admin-state');
  state.dataset.state = 'online';
  state.textContent = 'Signed in as the administrator';
  users.starts = [''];
  groups.starts = [''];
  await Promise.all([loadUsers(), loadGroups()]);
}

function signOut(message) {
  adminToken = null;
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch (e) { /* nothing kept */ }
  for (const id of ['link-dialog', 'reset-dialog', 'rename-dialog', 'delete-dialog']) {
    if ($(id).open) $(id).close();
  }
  $('users-body').replaceChildren();
  $('groups-body').replaceChildren();
  $('admin').hidden = true;
  $('admin-sign-out').hidden = true;
  $('admin-signin').hidden = false;
  const state = $('admin-state');
  state.dataset.state = 'offline';
  state.textContent = 'Signed out';
  $('admin-signin-error').textContent = message || '';
  $('admin-token-input').value = '';
  $('admin-token-input').focus();
}

// ---- users ---------------------------------------------------------------------------------

async function loadUsers() {
  const after = users.starts[users.starts.length - 1];
  const from = after ? `after=${encodeURIComponent(after)}&` : ''; // the first page has none
  const reply = await admin('GET', `/api/users?${from}limit=${PAGE}`);
  if (!reply.ok) {
    status(errorText(reply, 'Could not list the users.'));
    return;
  }
  users.more = reply.body.more;
  const body = $('users-body');
  body.replaceChildren(...reply.body.users.map(userRow));
  if (!reply.body.users.length) {
    const row = document.createElement('tr');
    const cell = textElement('td', 'No users yet.', 'empty');
    cell.colSpan = 4;
    row.append(cell);
    body.append(row);
  }
  $('users-prev').disabled = users.starts.length === 1;
  $('users-next').disabled = !users.more;
  $('users-page').textContent = `Page ${users.starts.length}`;
  body.dataset.page = String(users.starts.length);
  body.dataset.loaded = String(Date.now());
}

function userRow(user) {
  const row = document.createElement('tr');
  row.dataset.user = user.id;
  row.dataset.deactivated = String(user.deactivated);
  row.append(textElement('td', user.id, 'id'), textElement('td', user.name, 'name'));
  const state = [user.deactivated ? 'Deactivated' : 'Active'];
  state.push(user.has_password ? 'password set' : 'no password');
  row.append(textElement('td', state.join(', '), user.deactivated ? 'state off' : 'state'));
  const actions = document.createElement('td');
  actions.className = 'actions';
  actions.append(
    button('Sign-in link', 'secondary link', () => loginLink(user)),
    button('Reset password', 'secondary reset', () => openReset(user)),
    button('Revoke sessions', 'secondary revoke', () => revoke(user)),
    user.deactivated
      ? button('Reactivate', 'secondary reactivate', () => setDeactivated(user, false))
      : button('Deactivate', 'danger deactivate', () => setDeactivated(user, true)),
  );
  row.append(actions);
  return row;
}

async function createUser(event) {
  event.preventDefault();
  const id = $('new-user-id').value.trim();
  const name = $('new-user-name').value.trim();
  const password = $('new-user-password').value;
  $('create-user-error').textContent = '';
  if (!id) return;
  if (password && password.length < 8) {
    $('create-user-error').textContent = 'A password needs at least 8 characters.';
    return;
  }
  const body = { id };
  if (name) body.name = name;
  if (password) body.password = password;
  const reply = await admin('POST', '/api/users', body);
  if (!reply.ok) {
    $('create-user-error').textContent = errorText(reply, 'Could not create the user.');
    return;
  }
  $('create-user-form').reset();
  status(password ? `Created ${id}; they sign in with the password.` : `Created ${id}.`);
  await loadUsers();
  if (!password) await loginLink(reply.body);
}

async function loginLink(user) {
  const reply = await admin('POST', `/api/users/${encodeURIComponent(user.id)}/login-link`, {});
  if (!reply.ok) {
    status(errorText(reply, `Could not make a sign-in link for ${user.id}.`));
    return;
  }
  $('link-for').textContent = `For ${user.name || user.id} (${user.id}).`;
  $('link-output').value = `${location.origin}${reply.body.path}`;
  $('link-expires').textContent = `It expires on ${new Date(reply.body.expires_ms).toLocaleString()}, `
    + 'or once used. A newer link replaces it.';
  $('link-dialog').dataset.user = user.id;
  $('link-dialog').showModal();
  $('link-output').select();
}

function openReset(user) {
  dialogUser = user;
  $('reset-title').textContent = `Reset the password of ${user.name || user.id}`;
  $('reset-user').value = user.id;
  $('reset-password').value = '';
  $('reset-error').textContent = '';
  $('reset-dialog').showModal();
  $('reset-password').focus();
}

async function resetPassword(event) {
  event.preventDefault();
  const user = dialogUser;
  const password = $('reset-password').value;
  if (!user) return;
  if (password.length < 8) {
    $('reset-error').textContent = 'A password needs at least 8 characters.';
    return;
  }
  const reply = await admin('PUT', `/api/users/${encodeURIComponent(user.id)}`, { password });
  if (!reply.ok) {
    $('reset-error').textContent = errorText(reply, 'Could not set the password.');
    return;
  }
  $('reset-dialog').close();
  status(`New password set for ${user.id}; their earlier sessions ended.`);
  await loadUsers();
}

async function revoke(user) {
  const reply = await admin('POST', `/api/users/${encodeURIComponent(user.id)}/revoke`);
  status(reply.ok ? `Revoked every session and token of ${user.id}.`
    : errorText(reply, `Could not revoke ${user.id}.`));
}

async function setDeactivated(user, deactivated) {
  const reply = await admin('PUT', `/api/users/${encodeURIComponent(user.id)}`, { deactivated });
  if (!reply.ok) {
    status(errorText(reply, `Could not change ${user.id}.`));
    return;
  }
  status(deactivated ? `Deactivated ${user.id}: signed out everywhere, sign-in refused.`
    : `Reactivated ${user.id}.`);
  await loadUsers();
}

// ---- groups --------------------------------------------------------------------------------

async function loadGroups() {
  const after = groups.starts[groups.starts.length - 1];
  const from = after ? `after=${encodeURIComponent(after)}&` : ''; // the first page has none
  const reply = await admin('GET', `/api/groups?${from}limit=${PAGE}`);
  if (!reply.ok) {
    status(errorText(reply, 'Could not list the groups.'));
    return;
  }
  groups.more = reply.body.more;
  const body = $('groups-body');
  body.replaceChildren();
  for (const group of reply.body.groups) body.append(...groupRows(group));
  if (!reply.body.groups.length) {
    const row = document.createElement('tr');
    const cell = textElement('td', 'No groups yet.', 'empty');
    cell.colSpan = 5;
    row.append(cell);
    body.append(row);
  }
  $('groups-prev').disabled = groups.starts.length === 1;
  $('groups-next').disabled = !groups.more;
  $('groups-page').textContent = `Page ${groups.starts.length}`;
  body.dataset.page = String(groups.starts.length);
  body.dataset.loaded = String(Date.now());
}

// A group's row, and the row under it that lists its members when asked.
function groupRows(group) {
  const row = document.createElement('tr');
  row.dataset.group = group.id;
  row.dataset.kind = group.kind;
  const id = textElement('td', group.id, 'id');
  if (group.kind === 'direct') id.append(textElement('span', ' direct', 'kind'));
  row.append(id, textElement('td', group.name, 'name'),
    textElement('td', String(group.members), 'count'),
    textElement('td', String(group.last_seq), 'count'));
  const details = document.createElement('tr');
  details.className = 'members-row';
  details.dataset.membersOf = group.id;
  details.hidden = true;
  const cell = document.createElement('td');
  cell.colSpan = 5;
  details.append(cell);
  const actions = document.createElement('td');
  actions.className = 'actions';
  const toggle = button('Members', 'secondary members', () => toggleMembers(group, details, toggle));
  toggle.setAttribute('aria-expanded', 'false');
  actions.append(toggle);
  if (group.kind !== 'direct') {
    actions.append(
      button('Rename', 'secondary rename', () => openRename(group)),
      button('Delete', 'danger delete', () => openDelete(group)),
    );
  }
  row.append(actions);
  return [row, details];
}

async function toggleMembers(group, details, toggle) {
  if (!details.hidden) {
    details.hidden = true;
    toggle.setAttribute('aria-expanded', 'false');
    return;
  }
  const reply = await admin('GET', `/api/groups/${encodeURIComponent(group.id)}`);
  if (!reply.ok) {
    status(errorText(reply, `Could not load the members of ${group.id}.`));
    return;
  }
  const list = document.createElement('ul');
  list.className = 'member-list';
  for (const m of reply.body.members) {
    const item = document.createElement('li');
    item.dataset.user = m.user;
    item.dataset.role = m.role;
    item.append(textElement('span', m.name || m.user, 'name'), ' ',
      textElement('span', `(${m.user})`, 'id'), ' ',
      textElement('span', m.role, 'role'), ' ',
      textElement('span', `read up to ${m.read} of ${reply.body.last_seq}`, 'note'));
    list.append(item);
  }
  details.firstElementChild.replaceChildren(list);
  details.hidden = false;
  toggle.setAttribute('aria-expanded', 'true');
}

function openRename(group) {
  dialogGroup = group;
  $('rename-title').textContent = `Rename ${group.name}`;
  $('admin-rename-input').value = group.name;
  $('admin-rename-error').textContent = '';
  $('rename-dialog').showModal();
  $('admin-rename-input').select();
}

async function rename(event) {
  event.preventDefault();
  const group = dialogGroup;
  const name = $('admin-rename-input').value.trim();
  if (!group || !name) return;
  const reply = await admin('PUT', `/api/groups/${encodeURIComponent(group.id)}`, { name });
  if (!reply.ok) {
    $('admin-rename-error').textContent = errorText(reply, 'Could not rename the group.');
    return;
  }
  $('rename-dialog').close();
  status(`Renamed ${group.id} to ${name}.`);
  await loadGroups();
}

function openDelete(group) {
  dialogGroup = group;
  $('delete-what').textContent = `${group.name} (${group.id}), ${group.members} members, `
    + `${group.last_seq} messages.`;
  $('delete-error').textContent = '';
  $('delete-dialog').dataset.group = group.id;
  $('delete-dialog').showModal();
  $('delete-no').focus();
}

async function deleteGroup() {
  const group = dialogGroup;
  if (!group) return;
  const reply = await admin('DELETE', `/api/groups/${encodeURIComponent(group.id)}`);
  if (!reply.ok) {
    $('delete-error').textContent = errorText(reply, 'Could not delete the group.');
    return;
  }
  $('delete-dialog').close();
  status(`Deleted ${group.id}.`);
  await loadGroups();
}

// ---- wiring --------------------------------------------------------------------------------

$('admin-signin-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const token = $('admin-token-input').value.trim();
  $('admin-signin-error').textContent = '';
  if (token) signIn(token);
});
$('admin-sign-out').addEventListener('click', () => signOut());
$('create-user-form').addEventListener('submit', createUser);
$('users-next').addEventListener('click', () => {
  const last = $('users-body').querySelector('tr[data-user]:last-child');
  if (!users.more || !last) return;
  users.starts.push(last.dataset.user);
  loadUsers();
});
$('users-prev').addEventListener('click', () => {
  if (users.starts.length > 1) users.starts.pop();
  loadUsers();
});
$('groups-next').addEventListener('click', () => {
  const rows = $('groups-body').querySelectorAll('tr[data-group]');
  if (!groups.more || !rows.length) return;
  groups.starts.push(rows[rows.length - 1].dataset.group);
  loadGroups();
});
$('groups-prev').addEventListener('click', () => {
  if (groups.starts.length > 1) groups.starts.pop();
  loadGroups();
});
$('link-close').addEventListener('click', () => $('link-dialog').close());
$('link-copy').addEventListener('click', async () => {
  $('link-output').select();
  try {
    await navigator.clipboard.writeText($('link-output').value);
    $('link-copy').textContent = 'Copied';
  } catch (e) {
    $('link-copy').textContent = 'Select and copy';
  }
});
$('link-dialog').addEventListener('close', () => { $('link-copy').textContent = 'Copy'; });
$('reset-form').addEventListener('submit', resetPassword);
$('reset-cancel').addEventListener('click', () => $('reset-dialog').close());
$('admin-rename-form').addEventListener('submit', rename);
$('admin-rename-cancel').addEventListener('click', () => $('rename-dialog').close());
$('delete-yes').addEventListener('click', deleteGroup);
$('delete-no').addEventListener('click', () => $('delete-dialog').close());

let stored = null;
try {
  stored = sessionStorage.getItem(TOKEN_KEY);
} catch (e) {
  stored = null;
}
if (stored) {
  signIn(stored);
} else {
  signOut();
}
