// HTTP calls to the server's JSON API (docs/PROTOCOL.md §5), for the sign-in and password
// requests of the web client and for the admin page. One function: every answer, success or
// refusal, comes back as {ok, status, body}; only a network failure gives status 0. Tokens go in
// the Authorization header, never in a URL.

export async function call(method, path, { token = null, body = undefined } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (e) {
    return { ok: false, status: 0, body: { error: { code: 'network', message: 'The server cannot be reached.' } } };
  }
  let parsed = null;
  const text = await response.text();
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      parsed = { error: { code: 'unknown', message: text.slice(0, 200) } };
    }
  }
  return { ok: response.ok, status: response.status, body: parsed };
}
