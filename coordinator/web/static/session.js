// The login session: the bearer token and the time of the person's last
// activity, both in sessionStorage (this tab only, gone when it closes;
// never localStorage, never a cookie).

// IDLE_LIMIT_MS is the automatic logoff: 15 minutes without keyboard,
// pointer or touch activity (HIPAA 164.312(a)(2)(iii)).
export const IDLE_LIMIT_MS = 15 * 60 * 1000;

const TOKEN_KEY = 'cohort.token';
const ACTIVITY_KEY = 'cohort.lastActivity';

// Session keeps the token and the activity clock. storage is a Storage
// (sessionStorage); now returns milliseconds since the epoch.
export class Session {
  constructor(storage, now) {
    this.storage = storage;
    this.now = now;
    this.expires = null; // the token's expiry from whoami, ms, or null
  }

  // token returns the stored token, or null when logged out.
  token() {
    return this.storage.getItem(TOKEN_KEY);
  }

  // begin stores a token that whoami accepted and starts the idle clock.
  begin(token) {
    this.storage.setItem(TOKEN_KEY, token);
    this.storage.setItem(ACTIVITY_KEY, String(this.now()));
  }

  // end forgets the token.
  end() {
    this.storage.removeItem(TOKEN_KEY);
    this.storage.removeItem(ACTIVITY_KEY);
    this.expires = null;
  }

  // touch records activity. Writes are throttled to one a second, since
  // pointer movement fires often.
  touch() {
    if (this.token() === null) return;
    const now = this.now();
    if (now - this.lastActivity() >= 1000) {
      this.storage.setItem(ACTIVITY_KEY, String(now));
    }
  }

  // lastActivity returns the time of the last recorded activity, ms.
  lastActivity() {
    const v = Number(this.storage.getItem(ACTIVITY_KEY));
    return Number.isFinite(v) ? v : 0;
  }

  // expiredReason returns why a stored session must end now ('idle' or
  // 'expired'), or '' while it may go on.
  expiredReason() {
    if (this.token() === null) return '';
    const now = this.now();
    if (now - this.lastActivity() >= IDLE_LIMIT_MS) return 'idle';
    if (this.expires !== null && now >= this.expires) return 'expired';
    return '';
  }
}
