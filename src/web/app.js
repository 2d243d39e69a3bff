// Rollcall's built-in web client: plain JavaScript, no dependencies, no build step.
//
// It speaks the WebSocket protocol of docs/PROTOCOL.md like any other client:
// - messages are kept per group in a Map keyed by seq, so a message is never shown twice
//   (a push, a sync page and a history page may all carry it);
// - sends carry a client_id and stay in an outbox (also kept in sessionStorage) until `sent`;
//   after a reconnect the outbox is sent again and the server's dedupe by client_id makes the
//   resend harmless;
// - delivery (`ack`) and reading (`read`) are cumulative marks sent at most a few times a second;
//   a message counts as read once it is visible on screen while the tab is visible;
// - after any disconnect it reconnects with exponential backoff, then fills every gap with `sync`.
'use strict';

(() => {
  const TOKEN_KEY = 'rollcall.token';
  const OUTBOX_KEY = 'rollcall.outbox';
  const PAGE = 50;
  const SYNC_PAGE = 500;
  const ACK_DELAY_MS = 200;
  const READ_DELAY_MS = 300;
  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 8000;

  const $ = (id) => document.getElementById(id);

  const state = {
    token: null,
    me: null,
    ws: null,
    online: false,
    attempt: 0, // reconnect attempts since the last welcome
    welcomedEver: false, // this token was accepted at least once
    refusals: 0, // failed connects while /healthz answered (see checkToken)
    reconnectTimer: null,
    nextRequestId: 1,
    requests: new Map(), // request id -> callback(reply frame)
    groups: new Map(), // group id -> group (see newGroup)
    active: null, // the open group id
    outbox: [], // {group, client_id, body, failed?}: sends not yet answered by `sent`
    names: new Map(), // user id -> display name
    openWhenJoined: null, // a direct conversation asked for, waiting for its `joined`
    readersOpen: null, // {group, seq} shown in the receipts dialog
  };

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
      othersSeen: new Set(), // seqs from others pushed while not loaded (for unread counts)
      syncing: false,
      ackWanted: 0,
      ackSent: summary.delivered,
      readSent: summary.read,
      ackTimer: null,
      readTimer: null,
    };
  }

  // ---- connection --------------------------------------------------------------------------

  function setConnection(kind, text) {
    const el = $('connection');
    el.dataset.state = kind;
    el.textContent = text;
  }

  function connect() {
    clearTimeout(state.reconnectTimer);
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const url = `${scheme}://${location.host}/ws?token=${encodeURIComponent(state.token)}`;
    setConnection('connecting', 'Connecting\u2026');
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      scheduleReconnect(false);
      return;
    }
    state.ws = ws;
    let welcomed = false;
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (frame.type === 'welcome') welcomed = true;
      onFrame(frame);
    };
    ws.onclose = () => {
      if (state.ws !== ws) return;
      state.ws = null;
      state.online = false;
      state.requests.clear();
      for (const g of state.groups.values()) g.syncing = false;
      scheduleReconnect(welcomed);
      render();
    };
  }

  function scheduleReconnect(wasWelcomed) {
    if (!state.token) return;
    if (!wasWelcomed && (!state.welcomedEver || state.attempt >= 3)) {
      // Not accepted: find out whether the server is down or refuses the token.
      checkToken();
    } else {
      backoff();
    }
  }

  function backoff() {
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** state.attempt);
    const jittered = Math.round(delay * (0.75 + Math.random() * 0.5));
    state.attempt += 1;
    setConnection('offline', `Offline \u2014 reconnecting in ${Math.ceil(jittered / 1000)} s`);
    state.reconnectTimer = setTimeout(connect, jittered);
  }

  // The upgrade answers 401 for a bad token, which a browser does not show to scripts; if the
  // server is healthy and still refuses us, the token is the problem.
  async function checkToken() {
    let healthy = false;
    try {
      healthy = (await fetch('/healthz', { cache: 'no-store' })).ok;
    } catch (e) {
      healthy = false;
    }
    if (!state.token) return;
    if (!healthy) {
      state.refusals = 0;
      backoff(); // the server is down: keep trying
    } else if (state.refusals >= 1) {
      signOut('The server refused this token (expired or invalid). Paste another one.');
    } else {
      // The server may have come up just now: one more try before giving up on the token.
      state.refusals += 1;
      connect();
    }
  }

  function sendFrame(frame) {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return false;
    state.ws.send(JSON.stringify(frame));
    return true;
  }

  // Sends a request; `onReply` gets its answer (or its error). False when offline.
  function request(frame, onReply) {
    const id = state.nextRequestId++;
    frame.id = id;
    if (!sendFrame(frame)) return false;
    state.requests.set(id, onReply);
    return true;
  }

  // ---- incoming frames ---------------------------------------------------------------------

  function onFrame(frame) {
    if (frame.id !== undefined && state.requests.has(frame.id)) {
      const callback = state.requests.get(frame.id);
      state.requests.delete(frame.id);
      callback(frame);
      return;
    }
    switch (frame.type) {
      case 'welcome': return onWelcome(frame);
      case 'msg': return onMsg(frame);
      case 'receipt': return onReceipt(frame);
      case 'read_sync': return onReadSync(frame);
      case 'joined': return onJoined(frame);
      case 'left': return onLeft(frame);
      case 'error': console.warn('rollcall:', frame.code, frame.message); return undefined;
      default: return undefined; // unknown frame types are ignored (PROTOCOL.md)
    }
  }

  function onWelcome(frame) {
    state.me = frame.user;
    state.online = true;
    state.welcomedEver = true;
    state.attempt = 0;
    state.refusals = 0;
    setConnection('online', 'Online');
    $('me').textContent = `Signed in as ${frame.user}`;
    const seen = new Set();
    for (const summary of frame.groups) {
      seen.add(summary.group);
      const g = state.groups.get(summary.group);
      if (!g) {
        state.groups.set(summary.group, newGroup(summary));
        continue;
      }
      g.name = summary.name;
      g.lastSeq = Math.max(g.lastSeq, summary.last_seq);
      g.delivered = Math.max(g.delivered, summary.delivered);
      g.ackSent = summary.delivered;
      g.readSent = summary.read;
      g.othersSeen.clear();
      if (g.read > summary.read) {
        scheduleRead(g); // a read mark the server has not seen yet (lost with the connection)
      } else {
        g.read = summary.read;
        g.unread = summary.unread;
      }
    }
    for (const id of [...state.groups.keys()]) {
      if (!seen.has(id)) state.groups.delete(id);
    }
    if (state.active && !state.groups.has(state.active)) state.active = null;
    request({ type: 'users', limit: 1000 }, onUsers);
    for (const g of state.groups.values()) {
      if (g.loaded) {
        catchUp(g);
        pullReceipts(g, [...g.msgs.values()].filter((m) => m.from === state.me).map((m) => m.seq));
      }
    }
    if (state.active) openGroup(state.active);
    for (const entry of state.outbox) {
      if (!entry.failed) transmit(entry);
    }
    render();
  }

  function onUsers(frame) {
    if (frame.type !== 'users') return;
    const list = $('user-list');
    list.replaceChildren();
    for (const user of frame.users) {
      state.names.set(user.id, user.name);
      if (user.id === state.me) continue;
      const option = document.createElement('option');
      option.value = user.id;
      option.label = user.name;
      list.append(option);
    }
    render();
  }

  function onMsg(m) {
    const g = state.groups.get(m.group);
    if (!g) return;
    g.lastSeq = Math.max(g.lastSeq, m.seq);
    if (m.from === state.me) dropFromOutbox(m.group, m.client_id);
    if (g.loaded) {
      insertMessages(g, [m]);
      if (g.high < g.lastSeq) catchUp(g);
    }
    if (m.from !== state.me && m.seq > g.read) {
      g.othersSeen.add(m.seq);
      if (!countUnreadExactly(g)) g.unread += 1;
      announce(`New message from ${displayName(m.from)} in ${groupTitle(g)}: ${m.body}`);
    }
    scheduleAck(g, m.seq);
    render();
  }

  function onReceipt(frame) {
    const g = state.groups.get(frame.group);
    if (!g) return;
    for (const item of frame.items) g.receipts.set(item.seq, item);
    const open = state.readersOpen;
    if (open && open.group === frame.group && frame.items.some((i) => i.seq === open.seq)) {
      showReaders(open.group, open.seq);
    }
    render();
  }

  function onReadSync(frame) {
    const g = state.groups.get(frame.group);
    if (!g) return;
    if (frame.seq > g.read) {
      g.read = frame.seq;
      g.readSent = Math.max(g.readSent, frame.seq);
    }
    g.delivered = Math.max(g.delivered, frame.seq);
    recountUnread(g);
    render();
  }

  function onJoined(summary) {
    if (!state.groups.has(summary.group)) state.groups.set(summary.group, newGroup(summary));
    if (state.openWhenJoined === summary.group) {
      state.openWhenJoined = null;
      openGroup(summary.group);
    }
    render();
  }

  function onLeft(frame) {
    state.groups.delete(frame.group);
    if (state.active === frame.group) state.active = null;
    render();
  }

  // ---- messages ----------------------------------------------------------------------------

  // Adds messages to a loaded group, keyed by seq: whatever arrives twice is stored once.
  function insertMessages(g, messages) {
    for (const m of messages) {
      if (!g.msgs.has(m.seq)) g.msgs.set(m.seq, m);
      if (g.low === 0 || m.seq < g.low) g.low = m.seq;
      if (m.from === state.me) dropFromOutbox(g.id, m.client_id);
    }
    while (g.msgs.has(g.high + 1)) g.high += 1;
  }

  // Opens the latest page of a group the first time it is shown.
  function loadLatest(g) {
    if (g.loaded || g.syncing) return;
    g.syncing = request({ type: 'history', group: g.id, limit: PAGE }, (page) => {
      g.syncing = false;
      if (page.type !== 'messages') return;
      g.loaded = true;
      g.moreBefore = page.more;
      g.high = page.messages.length ? page.messages[0].seq - 1 : page.last_seq;
      g.low = page.messages.length ? page.messages[0].seq : page.last_seq + 1;
      insertMessages(g, page.messages);
      g.high = Math.max(g.high, page.last_seq);
      g.lastSeq = Math.max(g.lastSeq, page.last_seq);
      g.othersSeen.clear();
      afterPage(g, page.messages);
      if (g.high < g.lastSeq) catchUp(g);
      render({ scrollToEnd: true });
    });
  }

  // Fills everything between what the group holds and its head, page by page.
  function catchUp(g) {
    if (g.syncing || !g.loaded) return;
    g.syncing = request({ type: 'sync', group: g.id, after: g.high, limit: SYNC_PAGE }, (page) => {
      g.syncing = false;
      if (page.type !== 'messages') return;
      g.lastSeq = Math.max(g.lastSeq, page.last_seq);
      insertMessages(g, page.messages);
      afterPage(g, page.messages);
      if (page.messages.length && (page.more || g.high < g.lastSeq)) catchUp(g);
      countUnreadExactly(g);
      render();
    });
  }

  function loadOlder(g) {
    if (!g.loaded || !g.moreBefore || g.syncing) return;
    g.syncing = request({ type: 'history', group: g.id, before: g.low, limit: PAGE }, (page) => {
      g.syncing = false;
      if (page.type !== 'messages') return;
      g.moreBefore = page.more;
      insertMessages(g, page.messages);
      afterPage(g, page.messages);
      render({ keepScroll: true });
    });
  }

  // After any page: acknowledge delivery and fetch the receipt counts of our own messages.
  function afterPage(g, messages) {
    if (!messages.length) return;
    scheduleAck(g, messages[messages.length - 1].seq);
    pullReceipts(g, messages.filter((m) => m.from === state.me).map((m) => m.seq));
  }

  function pullReceipts(g, seqs) {
    for (let i = 0; i < seqs.length; i += 1000) {
      const chunk = seqs.slice(i, i + 1000);
      request({ type: 'receipts', group: g.id, seqs: chunk }, (reply) => {
        if (reply.type !== 'receipts') return;
        for (const item of reply.items) g.receipts.set(item.seq, item);
        render();
      });
    }
  }

  // Unread = messages from others above the read mark. Counted here when the group holds all
  // of them (or the mark is at the head); false when it cannot be.
  function countUnreadExactly(g) {
    for (const s of g.othersSeen) if (s <= g.read) g.othersSeen.delete(s);
    if (g.read >= g.lastSeq) {
      g.unread = 0;
      return true;
    }
    if (g.loaded && g.low <= g.read + 1 && g.high >= g.lastSeq) {
      let n = 0;
      for (const m of g.msgs.values()) if (m.seq > g.read && m.from !== state.me) n += 1;
      g.unread = n;
      return true;
    }
    return false;
  }

  // After the read mark moved (here or in another tab): the count, from a `sync` page of what
  // follows the mark (plus what was pushed since) when the group does not hold it all.
  function recountUnread(g) {
    if (!countUnreadExactly(g)) {
      const read = g.read;
      request({ type: 'sync', group: g.id, after: read, limit: 1000 }, (page) => {
        if (page.type !== 'messages' || g.read !== read) return;
        const seqs = new Set(page.messages.filter((m) => m.from !== state.me).map((m) => m.seq));
        for (const s of g.othersSeen) if (s > read) seqs.add(s);
        g.unread = seqs.size;
        render();
      });
    }
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

  function scheduleRead(g) {
    if (g.readTimer) return;
    g.readTimer = setTimeout(() => {
      g.readTimer = null;
      if (g.read > g.readSent && sendFrame({ type: 'read', group: g.id, seq: g.read })) {
        g.readSent = g.read;
      }
    }, READ_DELAY_MS);
  }

  // ---- reading: what is on screen counts as read -------------------------------------------

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
    const g = state.groups.get(state.active);
    if (!g || !g.loaded || document.visibilityState !== 'visible' || visible.size === 0) return;
    const top = Math.max(...visible);
    if (top <= g.read) return;
    g.read = top;
    g.delivered = Math.max(g.delivered, top);
    recountUnread(g);
    scheduleRead(g);
    renderConversations();
  }

  document.addEventListener('visibilitychange', markVisibleRead);

  // ---- sending -----------------------------------------------------------------------------

  function randomId() {
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return `w-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
  }

  function saveOutbox() {
    try {
      sessionStorage.setItem(OUTBOX_KEY, JSON.stringify(state.outbox));
    } catch (e) { /* storage full or disabled: the outbox still lives in memory */ }
  }

  function dropFromOutbox(group, clientId) {
    const before = state.outbox.length;
    state.outbox = state.outbox.filter((e) => !(e.group === group && e.client_id === clientId));
    if (state.outbox.length !== before) saveOutbox();
    pendingNodes.delete(clientId);
  }

  function transmit(entry) {
    request({ type: 'send', group: entry.group, client_id: entry.client_id, body: entry.body },
      (reply) => onSendReply(entry, reply));
  }

  function onSendReply(entry, reply) {
    const g = state.groups.get(entry.group);
    if (reply.type === 'sent') {
      dropFromOutbox(entry.group, entry.client_id);
      if (g && g.loaded) {
        insertMessages(g, [{ group: entry.group, seq: reply.seq, from: state.me, ts: reply.ts,
          body: entry.body, client_id: entry.client_id }]);
        g.lastSeq = Math.max(g.lastSeq, reply.seq);
        if (g.high < g.lastSeq) catchUp(g);
        pullReceipts(g, [reply.seq]);
      }
    } else if (reply.type === 'error' && ['busy', 'rate_limited', 'storage'].includes(reply.code)) {
      // Nothing was stored: send again later with the same client_id.
      const wait = Math.max(reply.retry_after_ms || 0, 1000);
      setTimeout(() => { if (state.outbox.includes(entry)) transmit(entry); }, wait);
    } else if (reply.type === 'error') {
      entry.failed = reply.message || reply.code;
      saveOutbox();
    }
    render();
  }

  function sendMessage(body) {
    const group = state.active;
    if (!group || body.trim() === '') return;
    const entry = { group, client_id: randomId(), body };
    state.outbox.push(entry);
    saveOutbox();
    transmit(entry); // when offline, the welcome after the reconnect sends it
    render({ scrollToEnd: true });
  }

  // ---- receipts dialog ---------------------------------------------------------------------

  function showReaders(group, seq) {
    state.readersOpen = { group, seq };
    request({ type: 'readers', group, seq }, (reply) => {
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
          const item = textElement('li', displayName(user));
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

  $('readers-close').addEventListener('click', () => $('readers-dialog').close());
  $('readers-dialog').addEventListener('close', () => { state.readersOpen = null; });

  // ---- rendering ---------------------------------------------------------------------------

  function textElement(tag, text, className) {
    const el = document.createElement(tag);
    el.textContent = text;
    if (className) el.className = className;
    return el;
  }

  function displayName(user) {
    return state.names.get(user) || user;
  }

  function groupTitle(g) {
    if (g.kind === 'direct') {
      const parts = g.id.split(':'); // dm:<a>:<b>
      const other = parts[1] === state.me ? parts[2] : parts[1];
      return displayName(other || g.name);
    }
    return g.name;
  }

  function sortedGroups() {
    return [...state.groups.values()].sort((a, b) => {
      if (a.kind !== b.kind) return a.kind === 'group' ? -1 : 1;
      return groupTitle(a).localeCompare(groupTitle(b));
    });
  }

  function formatTime(ts) {
    const date = new Date(ts);
    const today = new Date().toDateString() === date.toDateString();
    return today
      ? date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
      : date.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
  }

  function announce(text) {
    const live = $('live');
    live.append(textElement('p', text));
    while (live.childElementCount > 5) live.firstElementChild.remove();
  }

  function render(options = {}) {
    renderConversations();
    renderPane(options);
  }

  const conversationNodes = new Map(); // group id -> <li> of the conversation list

  // Updates the conversation list in place (replacing the buttons would swallow a click that
  // lands between a re-render's mousedown and mouseup, and lose keyboard focus).
  function renderConversations() {
    const list = $('conversations');
    const wanted = [];
    for (const g of sortedGroups()) {
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
      const title = groupTitle(g);
      if (button.querySelector('.title').textContent !== title) {
        button.querySelector('.title').textContent = title;
      }
      if (g.id === state.active) button.setAttribute('aria-current', 'true');
      else button.removeAttribute('aria-current');
      const badge = button.querySelector('.badge');
      badge.hidden = !(g.unread > 0);
      badge.querySelector('.count').textContent = g.unread > 0 ? String(g.unread) : '';
      wanted.push(item);
    }
    for (const id of [...conversationNodes.keys()]) {
      if (!state.groups.has(id)) conversationNodes.delete(id);
    }
    const current = [...list.children];
    if (current.length !== wanted.length || current.some((el, i) => el !== wanted[i])) {
      list.replaceChildren(...wanted);
    }
  }

  const nodes = new Map(); // seq -> <li> of the open group

  function renderPane({ scrollToEnd = false, keepScroll = false } = {}) {
    const g = state.groups.get(state.active);
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
    $('pane-title').textContent = groupTitle(g);
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
    for (const entry of state.outbox) {
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
    const mine = m.from === state.me;
    li.className = mine ? 'msg mine' : 'msg';
    li.dataset.seq = String(m.seq);
    li.dataset.group = m.group;
    li.dataset.from = m.from;
    const meta = document.createElement('div');
    meta.className = 'meta';
    meta.append(textElement('span', mine ? 'You' : displayName(m.from), 'from'));
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

  const pendingNodes = new Map(); // client_id -> <li>

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
        dropFromOutbox(entry.group, entry.client_id);
        render();
      });
      status.append(discard);
    } else {
      status.textContent = state.online ? 'Sending\u2026' : 'Waiting for the connection\u2026';
    }
    return li;
  }

  function openGroup(id) {
    const g = state.groups.get(id);
    if (!g) return;
    if (state.active !== id) {
      state.active = id;
      nodes.clear();
      visible.clear();
      observer.disconnect();
      $('message-list').replaceChildren();
    }
    document.body.classList.add('show-pane');
    if (!g.loaded) loadLatest(g); else catchUp(g);
    render({ scrollToEnd: true });
  }

  // ---- sign-in and the page's controls -----------------------------------------------------

  function start(token) {
    state.token = token;
    try {
      state.outbox = JSON.parse(sessionStorage.getItem(OUTBOX_KEY) || '[]');
    } catch (e) {
      state.outbox = [];
    }
    $('signin').hidden = true;
    $('app').hidden = false;
    $('sign-out').hidden = false;
    connect();
  }

  function signOut(message) {
    state.token = null;
    clearTimeout(state.reconnectTimer);
    if (state.ws) {
      const ws = state.ws;
      state.ws = null;
      ws.close();
    }
    state.online = false;
    state.welcomedEver = false;
    state.groups.clear();
    state.active = null;
    conversationNodes.clear();
    nodes.clear();
    $('conversations').replaceChildren();
    $('message-list').replaceChildren();
    state.outbox = [];
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(OUTBOX_KEY);
    setConnection('offline', 'Signed out');
    $('me').textContent = '';
    $('app').hidden = true;
    $('sign-out').hidden = true;
    $('signin').hidden = false;
    $('signin-error').textContent = message || '';
    $('token-input').value = '';
    $('token-input').focus();
  }

  $('signin-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const token = $('token-input').value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('signin-error').textContent = '';
    start(token);
  });

  $('sign-out').addEventListener('click', () => signOut());

  $('composer').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = $('composer-input');
    sendMessage(input.value);
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
    if (!state.online) {
      $('direct-error').textContent = 'Offline: try again once connected.';
      return;
    }
    request({ type: 'direct', with: other }, (reply) => {
      if (reply.type !== 'direct') {
        $('direct-error').textContent = reply.message || 'Could not open the conversation.';
        return;
      }
      input.value = '';
      if (state.groups.has(reply.group)) openGroup(reply.group);
      else state.openWhenJoined = reply.group; // its `joined` is on the way
    });
  });

  $('older').addEventListener('click', () => loadOlder(state.groups.get(state.active)));
  $('messages').addEventListener('scroll', () => {
    const g = state.groups.get(state.active);
    if (g && $('messages').scrollTop < 40) loadOlder(g);
  });

  $('back').addEventListener('click', () => {
    document.body.classList.remove('show-pane');
    const button = document.querySelector(`.conversation[aria-current="true"]`);
    if (button) button.focus();
  });

  // A token in the URL (a login link) is remembered for this tab and removed from the address
  // bar, so it does not end up in bookmarks or screenshots.
  const params = new URLSearchParams(location.search);
  const fromUrl = params.get('token');
  if (fromUrl) {
    sessionStorage.setItem(TOKEN_KEY, fromUrl);
    history.replaceState(null, '', location.pathname);
  }
  const token = fromUrl || sessionStorage.getItem(TOKEN_KEY);
  if (token) {
    start(token);
  } else {
    $('signin').hidden = false;
    setConnection('offline', 'Signed out');
  }
})();
