import { createStore } from './store';

/** The tokens of `POST /auth/login` (and of each refresh), with when the access token expires. */
export interface Tokens {
  access_token: string;
  refresh_token: string;
  /** Epoch milliseconds. */
  expires_at: number;
}

/** What the storefront reads from the access token: who, and which role. The server checks again. */
export interface Claims {
  sub: string;
  role: 'customer' | 'admin';
  email: string;
}

export interface Session {
  tokens: Tokens;
  claims: Claims;
}

const KEY = 'cloudshop.session';

function decodeClaims(token: string): Claims | null {
  try {
    const payload = token.split('.')[1] ?? '';
    const json = atob(payload.replace(/-/g, '+').replace(/_/g, '/'));
    const claims = JSON.parse(json) as Partial<Claims>;
    if (typeof claims.sub !== 'string' || (claims.role !== 'customer' && claims.role !== 'admin')) return null;
    return { sub: claims.sub, role: claims.role, email: String(claims.email ?? '') };
  } catch {
    return null;
  }
}

function fromTokens(tokens: Tokens | null): Session | null {
  if (!tokens) return null;
  const claims = decodeClaims(tokens.access_token);
  return claims ? { tokens, claims } : null;
}

function read(): Session | null {
  try {
    const raw = localStorage.getItem(KEY);
    return raw ? fromTokens(JSON.parse(raw) as Tokens) : null;
  } catch {
    return null;
  }
}

/** The signed-in session, shared by every tab: a login, refresh or logout in one tab reaches the others. */
export const session = createStore<Session | null>(read());

export function saveTokens(tokens: Tokens | null): void {
  if (tokens) localStorage.setItem(KEY, JSON.stringify(tokens));
  else localStorage.removeItem(KEY);
  session.set(fromTokens(tokens));
}

/** Re-read what another tab may have written (a refresh rotates the token; the old one must not be reused). */
export function reloadSession(): Session | null {
  const current = read();
  session.set(current);
  return current;
}

addEventListener('storage', (event) => {
  if (event.key === KEY || event.key === null) reloadSession();
});
