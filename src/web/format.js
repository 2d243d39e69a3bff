// How a conversation reads: message bodies turned into DOM nodes (http(s) links, mentions of
// you), day separators and the grouping of consecutive messages. No state, no requests: the
// rules here are pure functions of their arguments, so view.js draws and tests check the same.
// - a body becomes text nodes, <a> elements for http(s) URLs (rel="noopener noreferrer",
//   target="_blank") and <mark> elements for `@<your id>`; nothing else becomes markup, and no
//   string is ever parsed as HTML (rejected: a Markdown subset, whose parser would be the first
//   place an injection hides);
// - messages are grouped (one name and time) when the same sender wrote them within
//   GROUP_WINDOW_MS of each other on the same day;
// - days are local calendar days of the browser.

export const GROUP_WINDOW_MS = 5 * 60 * 1000;

// A URL candidate: a scheme, then anything up to white space or an angle bracket or a quote.
const URL_PATTERN = /\bhttps?:\/\/[^\s<>"']+/gi;
// A mention: `@` and an id, not preceded by a word character (so e-mail addresses are not).
const MENTION_PATTERN = /(^|[^\w@])@([A-Za-z0-9_.-]+)/g;

// The link target of a candidate, trimmed of trailing punctuation, or null if it is no
// http(s) URL. Returns [href, length of the text it covers].
function linkOf(candidate) {
  let text = candidate.replace(/[.,;:!?]+$/, '');
  // A closing parenthesis ends the URL unless the URL opened one: "(see the docs at example.org/a)" stays whole.
  while (text.endsWith(')') && (text.match(/\(/g) || []).length < (text.match(/\)/g) || []).length) {
    text = text.slice(0, -1);
  }
  let url;
  try {
    url = new URL(text);
  } catch (e) {
    return null;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return null;
  return [url.href, text.length];
}

// Text with the mentions of `me` in <mark class="mention">.
function appendWithMentions(parent, text, me) {
  if (!me) {
    parent.append(text);
    return;
  }
  let at = 0;
  for (const match of text.matchAll(MENTION_PATTERN)) {
    const id = match[2].replace(/[.-]+$/, '');
    if (id !== me) continue;
    const start = match.index + match[1].length;
    if (start > at) parent.append(text.slice(at, start));
    const mark = document.createElement('mark');
    mark.className = 'mention';
    mark.textContent = `@${id}`;
    parent.append(mark);
    at = start + 1 + id.length;
  }
  if (at < text.length) parent.append(text.slice(at));
}

// Fills `parent` with `body` as text, links and mentions of `me`.
export function fillBody(parent, body, me) {
  parent.replaceChildren();
  let at = 0;
  for (const match of body.matchAll(URL_PATTERN)) {
    const link = linkOf(match[0]);
    if (!link) continue;
    const [href, length] = link;
    if (match.index > at) appendWithMentions(parent, body.slice(at, match.index), me);
    const a = document.createElement('a');
    a.href = href;
    a.rel = 'noopener noreferrer';
    a.target = '_blank';
    a.textContent = body.slice(match.index, match.index + length);
    parent.append(a);
    at = match.index + length;
  }
  if (at < body.length) appendWithMentions(parent, body.slice(at), me);
}

// Whether `body` mentions `me` (`@me`, as a word of its own).
export function mentions(body, me) {
  if (!me || typeof body !== 'string') return false;
  for (const match of body.matchAll(MENTION_PATTERN)) {
    if (match[2].replace(/[.-]+$/, '') === me) return true;
  }
  return false;
}

// The local calendar day of a timestamp, as `YYYY-MM-DD`.
export function dayKey(ts) {
  const d = new Date(ts);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

// What a day separator says: "Today", "Yesterday", else the date.
export function dayLabel(ts, now = Date.now()) {
  const key = dayKey(ts);
  if (key === dayKey(now)) return 'Today';
  const yesterday = new Date(now);
  yesterday.setDate(yesterday.getDate() - 1);
  if (key === dayKey(yesterday.getTime())) return 'Yesterday';
  const date = new Date(ts);
  const sameYear = date.getFullYear() === new Date(now).getFullYear();
  return date.toLocaleDateString([], sameYear
    ? { weekday: 'long', month: 'long', day: 'numeric' }
    : { year: 'numeric', month: 'long', day: 'numeric' });
}

// Whether message `m` continues the group of `previous` (one name and time for both).
export function continues(previous, m) {
  return Boolean(previous) && previous.from === m.from && m.ts >= previous.ts
    && m.ts - previous.ts <= GROUP_WINDOW_MS && dayKey(previous.ts) === dayKey(m.ts);
}

// A message time: the clock (the day separator above says the day).
export function clock(ts) {
  return new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

// A short excerpt of a body for a quote or a notification.
export function excerpt(body, max = 140) {
  const flat = String(body || '').replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}\u2026` : flat;
}
