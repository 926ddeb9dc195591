// The admin API client: GET with the bearer token, RFC 9457 problem
// details turned into APIError, pagination followed.

// APIError is a failed API call. status is the HTTP status (0 when the
// coordinator could not be reached); detail is what the person is shown.
export class APIError extends Error {
  constructor(status, title, detail) {
    super(detail || title || `HTTP ${status}`);
    this.status = status;
    this.title = title || '';
    this.detail = detail || title || `HTTP ${status}`;
  }
}

// PAGE_SIZE is asked of list routes; MAX_PAGES bounds one listing so that a
// server that keeps handing out tokens cannot keep the page busy.
const PAGE_SIZE = 100;
const MAX_PAGES = 50;

export class API {
  // session supplies the token; onUnauthorized(detail) is called on any
  // 401 of a call made with the session's token.
  constructor(session, onUnauthorized) {
    this.session = session;
    this.onUnauthorized = onUnauthorized;
  }

  // get fetches a /v1 path and returns the decoded JSON. With token given
  // (the login form), that token is used and a 401 is only thrown.
  async get(path, token) {
    const login = token !== undefined;
    const tok = login ? token : this.session.token();
    if (tok === null) throw new APIError(401, 'Unauthorized', 'Not logged in.');
    let res;
    try {
      res = await fetch(path, {
        method: 'GET',
        headers: {
          'Authorization': `Bearer ${tok}`,
          'Accept': 'application/json, application/problem+json',
        },
        credentials: 'omit',
        cache: 'no-store',
        referrerPolicy: 'no-referrer',
      });
    } catch (e) {
      throw new APIError(0, 'Network error', `Cannot reach the coordinator (${e.message}).`);
    }
    if (!res.ok) {
      const err = await problem(res);
      if (res.status === 401 && !login) this.onUnauthorized(err.detail);
      throw err;
    }
    try {
      return await res.json();
    } catch {
      throw new APIError(res.status, 'Bad response', `The API answered ${path} with something that is not JSON.`);
    }
  }

  // list fetches every page of a paginated route and returns the items
  // under key. truncated is true when MAX_PAGES ran out first.
  async list(path, key) {
    const items = [];
    const seen = new Set();
    let pageToken = '';
    for (let i = 0; i < MAX_PAGES; i++) {
      const q = new URLSearchParams({page_size: String(PAGE_SIZE)});
      if (pageToken) q.set('page_token', pageToken);
      const body = await this.get(`${path}?${q}`);
      if (Array.isArray(body[key])) items.push(...body[key]);
      pageToken = typeof body.next_page_token === 'string' ? body.next_page_token : '';
      if (!pageToken || seen.has(pageToken)) return {items, truncated: false};
      seen.add(pageToken);
    }
    return {items, truncated: true};
  }
}

// problem reads an error response: the detail of an RFC 9457 document
// when there is one, else the status line. Other bodies are not shown.
async function problem(res) {
  const ct = res.headers.get('Content-Type') || '';
  if (ct.includes('json')) {
    try {
      const p = await res.json();
      if (p && typeof p === 'object') {
        const title = typeof p.title === 'string' ? p.title : res.statusText;
        const detail = typeof p.detail === 'string' && p.detail !== '' ? p.detail : title;
        return new APIError(res.status, title, detail);
      }
    } catch {
      // fall through to the status line
    }
  }
  return new APIError(res.status, res.statusText, `HTTP ${res.status} ${res.statusText}`.trim());
}
