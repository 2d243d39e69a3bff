// Groups managed by their members: the "New group" dialog (a name, members picked from the
// people the `users` pages list) and a group's settings dialog. Owners and admins rename the
// group, add and remove members and set roles (rename_group, add_member, remove_member,
// set_role) and set the receipt policy (set_receipts); everyone else sees the member list
// (`members`) and the policy read-only. Anyone may leave (`leave`).
// The server decides every rule (an admin cannot remove or demote an owner, ...); the controls
// here only leave out what is sure to be refused, and a refusal is shown in words.

import * as model from './model.js';
import * as connection from './connection.js';

const $ = (id) => document.getElementById(id);

const ROLES = ['owner', 'admin', 'member'];
const ROLE_WORDS = { owner: 'Owner', admin: 'Admin', member: 'Member' };
const POLICY_WORDS = {
  full: 'Receipts: full (members see who has seen each message).',
  counts: 'Receipts: counts only (members see how many have seen a message, not who).',
  off: 'Receipts: off (no receipts are kept).',
};

let settingsFor = null; // the group id the settings dialog shows
let open = null; // view.js's openGroup, from wire()

function textElement(tag, text, className) {
  const el = document.createElement(tag);
  el.textContent = text;
  if (className) el.className = className;
  return el;
}

function offline(errorId) {
  $(errorId).textContent = 'Offline: try again once connected.';
}

// ---- New group -----------------------------------------------------------------------------

function openNewGroup() {
  $('new-group-name').value = '';
  $('new-group-filter').value = '';
  $('new-group-error').textContent = '';
  drawPeople();
  $('new-group-dialog').showModal();
  $('new-group-name').focus();
}

// The people to pick from (everyone but us), filtered by what is typed; picks are kept.
function drawPeople() {
  const list = $('new-group-people');
  const picked = new Set([...list.querySelectorAll('input:checked')].map((i) => i.dataset.user));
  const filter = $('new-group-filter').value.trim().toLowerCase();
  list.replaceChildren();
  for (const person of model.users()) {
    if (person.id === model.me()) continue;
    const item = document.createElement('li');
    const label = document.createElement('label');
    const box = document.createElement('input');
    box.type = 'checkbox';
    box.dataset.user = person.id;
    box.checked = picked.has(person.id);
    label.append(box, textElement('span', person.name || person.id, 'name'),
      textElement('span', person.id, 'id'));
    item.append(label);
    const shown = !filter || person.id.toLowerCase().includes(filter)
      || (person.name || '').toLowerCase().includes(filter);
    item.hidden = !shown && !box.checked;
    list.append(item);
  }
  if (!list.childElementCount) list.append(textElement('li', 'Nobody else has an account yet.', 'nobody'));
}

function createGroup(event) {
  event.preventDefault();
  const name = $('new-group-name').value.trim();
  const members = [...$('new-group-people').querySelectorAll('input:checked')]
    .map((i) => i.dataset.user);
  $('new-group-error').textContent = '';
  if (!name) return;
  const sent = connection.request({ type: 'create_group', name, members }, (reply) => {
    if (reply.type !== 'group_created') {
      $('new-group-error').textContent = reply.message || 'Could not create the group.';
      return;
    }
    $('new-group-dialog').close();
    if (model.hasGroup(reply.group)) open(reply.group);
    else model.openWhenJoinedIs(reply.group); // its `joined` is on the way
  });
  if (!sent) offline('new-group-error');
}

// ---- Settings ------------------------------------------------------------------------------

export function openSettings(id) {
  const g = model.group(id);
  if (!g || g.kind !== 'group') return;
  settingsFor = id;
  $('settings-error').textContent = '';
  $('leave-confirm').hidden = true;
  $('leave-group').hidden = false;
  $('rename-input').value = g.name;
  drawSettings();
  const dialog = $('settings-dialog');
  if (!dialog.open) dialog.showModal();
  refreshMembers();
}

function refreshMembers() {
  const id = settingsFor;
  if (!id) return;
  const sent = connection.members(id, (reply) => {
    if (settingsFor !== id) return;
    if (reply.type !== 'members') {
      $('settings-error').textContent = reply.message || 'Could not load the members.';
      return;
    }
    drawSettings();
  });
  if (!sent) offline('settings-error');
}

// What the dialog shows, from the group record (its role and last member list).
function drawSettings() {
  const g = model.group(settingsFor);
  if (!g) return;
  const manage = model.canManage(g);
  const dialog = $('settings-dialog');
  dialog.dataset.group = g.id;
  dialog.dataset.role = g.role;
  dialog.dataset.manage = String(manage);
  $('settings-title').textContent = manage ? `Settings of ${g.name}` : `Members of ${g.name}`;
  $('settings-role').textContent = `Your role: ${ROLE_WORDS[g.role] || g.role}.`
    + (manage ? '' : ' Only owners and admins change the name and the members.');
  $('rename-form').hidden = !manage;
  $('add-member-form').hidden = !manage;
  $('receipts-form').hidden = !manage;
  if (document.activeElement !== $('receipts-select')) $('receipts-select').value = g.policy;
  $('settings-receipts').textContent = POLICY_WORDS[g.policy] || `Receipts: ${g.policy}.`;
  const list = $('settings-members');
  const members = g.members || [];
  $('settings-members-title').textContent = g.members ? `Members (${members.length})` : 'Members';
  list.replaceChildren();
  for (const m of members) list.append(memberItem(g, m, manage));
  // Who can be added: the people not in the group.
  const select = $('add-member-select');
  const inGroup = new Set(members.map((m) => m.user));
  const chosen = select.value;
  select.replaceChildren();
  for (const person of model.users()) {
    if (inGroup.has(person.id)) continue;
    const option = textElement('option', `${person.name || person.id} (${person.id})`);
    option.value = person.id;
    select.append(option);
  }
  if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
  const nobody = !select.options.length;
  if (nobody) select.append(textElement('option', 'Everyone is a member already'));
  select.disabled = nobody;
  $('add-member-form').querySelector('button').disabled = nobody;
}

function memberItem(g, m, manage) {
  const item = document.createElement('li');
  item.dataset.user = m.user;
  item.dataset.role = m.role;
  const who = textElement('span', m.user === model.me() ? `${m.name || m.user} (you)` : (m.name || m.user), 'name');
  item.append(who);
  // An admin cannot change or remove an owner; nobody changes themselves here (leave instead).
  const editable = manage && m.user !== model.me() && (g.role === 'owner' || m.role !== 'owner');
  if (!editable) {
    item.append(textElement('span', ROLE_WORDS[m.role] || m.role, 'role'));
    return item;
  }
  const select = document.createElement('select');
  select.className = 'role-select';
  select.setAttribute('aria-label', `Role of ${m.name || m.user}`);
  for (const role of ROLES) {
    if (role === 'owner' && g.role !== 'owner') continue; // only an owner makes owners
    const option = textElement('option', ROLE_WORDS[role]);
    option.value = role;
    select.append(option);
  }
  select.value = m.role;
  select.addEventListener('change', () => {
    change({ type: 'set_role', group: g.id, user: m.user, role: select.value });
  });
  const remove = textElement('button', 'Remove', 'secondary remove-member');
  remove.type = 'button';
  remove.setAttribute('aria-label', `Remove ${m.name || m.user}`);
  remove.addEventListener('click', () => change({ type: 'remove_member', group: g.id, user: m.user }));
  item.append(select, remove);
  return item;
}

// add_member, remove_member, set_role: the `members` reply redraws the dialog.
function change(frame) {
  $('settings-error').textContent = '';
  const id = settingsFor;
  const sent = connection.changeMembers(frame, (reply) => {
    if (settingsFor !== id) return;
    if (reply.type !== 'members') $('settings-error').textContent = reply.message || reply.code;
    drawSettings();
  });
  if (!sent) offline('settings-error');
}

function rename(event) {
  event.preventDefault();
  const name = $('rename-input').value.trim();
  $('settings-error').textContent = '';
  if (!name || !settingsFor) return;
  const sent = connection.renameGroup(settingsFor, name, (reply) => {
    if (reply.type !== 'group_updated') {
      $('settings-error').textContent = reply.message || 'Could not rename the group.';
    }
  });
  if (!sent) offline('settings-error');
}

function setPolicy() {
  const receipts = $('receipts-select').value;
  const id = settingsFor;
  $('settings-error').textContent = '';
  if (!id) return;
  const sent = connection.setReceipts(id, receipts, (reply) => {
    if (reply.type !== 'group_updated') {
      $('settings-error').textContent = reply.message || 'Could not change the receipts.';
    }
    if (settingsFor === id) drawSettings();
  });
  if (!sent) offline('settings-error');
}

function addMember(event) {
  event.preventDefault();
  const user = $('add-member-select').value;
  if (user && settingsFor) change({ type: 'add_member', group: settingsFor, user });
}

function leave() {
  const id = settingsFor;
  if (!id) return;
  const sent = connection.leaveGroup(id, (reply) => {
    if (reply.type !== 'left') $('settings-error').textContent = reply.message || reply.code;
  });
  if (!sent) offline('settings-error');
}

// ---- what the connection reports -----------------------------------------------------------

// A group's name or policy changed: the dialog follows.
export function groupUpdated(g) {
  if (settingsFor !== g.id) return;
  if (document.activeElement !== $('rename-input')) $('rename-input').value = g.name;
  drawSettings();
}

// Someone joined or left a group whose settings are open: the list is fetched again.
export function membersChanged(id) {
  if (settingsFor === id) refreshMembers();
}

// We are no longer in the group: its dialog closes.
export function gone(id) {
  if (settingsFor === id) $('settings-dialog').close();
}

// After a reconnect (a new `welcome`): an open dialog fetches its list again.
export function welcomed() {
  if (settingsFor && model.hasGroup(settingsFor)) refreshMembers();
  else if (settingsFor) $('settings-dialog').close();
}

// The people changed (a `users` page): the pickers follow.
export function usersChanged() {
  if ($('new-group-dialog').open) drawPeople();
  if (settingsFor) drawSettings();
}

export function wire(actions) {
  open = actions.open;
  $('new-group').addEventListener('click', openNewGroup);
  $('new-group-form').addEventListener('submit', createGroup);
  $('new-group-filter').addEventListener('input', drawPeople);
  $('new-group-cancel').addEventListener('click', () => $('new-group-dialog').close());
  $('rename-form').addEventListener('submit', rename);
  $('add-member-form').addEventListener('submit', addMember);
  $('receipts-select').addEventListener('change', setPolicy);
  $('receipts-form').addEventListener('submit', (event) => event.preventDefault());
  $('leave-group').addEventListener('click', () => {
    $('leave-group').hidden = true;
    $('leave-confirm').hidden = false;
    $('leave-no').focus();
  });
  $('leave-no').addEventListener('click', () => {
    $('leave-confirm').hidden = true;
    $('leave-group').hidden = false;
  });
  $('leave-yes').addEventListener('click', leave);
  $('settings-close').addEventListener('click', () => $('settings-dialog').close());
  $('settings-dialog').addEventListener('close', () => { settingsFor = null; });
}
