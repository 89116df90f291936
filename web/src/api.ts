/**
 * The public `/api/v1` contract (DESIGN.md §4), and nothing else: every call the storefront and the
 * admin console make goes through `request`, which adds the access token, refreshes it silently
 * before it expires (or once after a 401), and turns problem+json answers into `ApiError`.
 */
import { reloadSession, saveTokens, session, type Tokens } from './session';
import { createStore } from './store';

export const API = '/api/v1';

export interface Money {
  amount: number;
  currency: string;
}

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

export interface User {
  id: string;
  email: string;
  name: string;
  role: 'customer' | 'admin';
}

export interface Product {
  id: string;
  name: string;
  description: string;
  category: string;
  price: Money;
  stock: number;
  image_url: string | null;
  created_at: string;
  updated_at: string;
}

export interface ProductInput {
  name: string;
  description: string;
  category: string;
  price: Money;
  stock: number;
}

export interface ProductPatch {
  name?: string;
  description?: string;
  category?: string;
  price?: Money;
  stock_adjustment?: number;
}

export interface Line {
  product_id: string;
  name: string;
  quantity: number;
  unit_price: Money;
  line_total: Money;
}

export interface Cart {
  items: Line[];
  total: Money | null;
}

export interface Address {
  name: string;
  line1: string;
  line2?: string | null;
  city: string;
  state: string;
  postal_code: string;
  country: string;
}

export type OrderStatus =
  'PENDING_PAYMENT' | 'PAID' | 'FULFILLED' | 'CANCELLING' | 'CANCELLED' | 'PAYMENT_FAILED' | 'REFUNDED';

export interface Order {
  id: string;
  user_id: string;
  status: OrderStatus;
  lines: Line[];
  total: Money;
  items: number;
  payment_id: string | null;
  failure_reason: string | null;
  shipping_address: Address;
  created_at: string;
  updated_at: string;
}

export interface Refund {
  id: string;
  amount: Money;
  created_at: string;
}

export interface Payment {
  id: string;
  order_id: string;
  status: string;
  amount: Money;
  refunded: Money;
  payment_method: string;
  decline_code: string | null;
  failure_reason: string | null;
  refunds: Refund[];
}

export interface Notification {
  id: string;
  event_type: string;
  order_id: string;
  title: string;
  message: string;
  occurred_at: string;
}

export interface AnalyticsWindow {
  window_start: string;
  window_end: string;
  unique_users: number;
  orders: number;
  revenue: Money[];
  items_sold: number;
  final: boolean;
}

export interface ImageUpload {
  image_key: string;
  upload: { url: string; fields: Record<string, string> };
  expires_in: number;
}

/** An RFC 9457 problem, with the extension members this API uses (`errors`, `products`). */
export interface Problem {
  type?: string;
  title: string;
  status: number;
  detail: string;
  errors?: { loc: (string | number)[]; msg: string }[];
  products?: string[];
  retry_after_ms?: number;
}

export class ApiError extends Error {
  readonly status: number;
  readonly problem: Problem;

  constructor(problem: Problem) {
    super(problem.detail || problem.title);
    this.status = problem.status;
    this.problem = problem;
  }

  get outOfStock(): boolean {
    return this.status === 409 && (this.problem.type ?? '').endsWith('/out-of-stock');
  }

  /** What to tell a person: the detail, plus each field the validation named. */
  get message(): string {
    const fields = (this.problem.errors ?? []).map((e) => `${e.loc.filter((p) => p !== 'body').join('.')}: ${e.msg}`);
    return [this.problem.detail || this.problem.title, ...fields].join(' ');
  }
}

interface TokensOut {
  access_token: string;
  refresh_token: string;
  expires_in: number;
}

// Refresh a minute before expiry, so that a request never leaves with a token about to lapse.
const REFRESH_MARGIN_MS = 60_000;
let refreshing: Promise<Tokens | null> | null = null;

function toTokens(body: TokensOut): Tokens {
  return {
    access_token: body.access_token,
    refresh_token: body.refresh_token,
    expires_at: Date.now() + body.expires_in * 1000,
  };
}

/**
 * Rotate the refresh token. One refresh at a time across tabs (Web Locks): the server treats a rotated
 * refresh token used again as theft and ends the session, so a second tab must pick up the first's result.
 */
export function refreshTokens(stale: Tokens): Promise<Tokens | null> {
  const run = async (): Promise<Tokens | null> => {
    const current = reloadSession();
    if (!current) return null;
    if (current.tokens.refresh_token !== stale.refresh_token) return current.tokens;
    const response = await fetch(`${API}/auth/refresh`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ refresh_token: stale.refresh_token }),
    });
    if (!response.ok) {
      // 4xx: the session is over (expired, revoked, logged out elsewhere). 5xx: keep it, try later.
      if (response.status < 500) saveTokens(null);
      return null;
    }
    const tokens = toTokens((await response.json()) as TokensOut);
    saveTokens(tokens);
    return tokens;
  };
  if ('locks' in navigator && navigator.locks) {
    // The lock's promise settles with the callback's (DOM typings nest the two).
    return navigator.locks.request('cloudshop.refresh', run).then((tokens) => tokens);
  }
  refreshing ??= run().finally(() => {
    refreshing = null;
  });
  return refreshing;
}

async function accessToken(): Promise<string | null> {
  const current = session.get();
  if (!current) return null;
  if (current.tokens.expires_at - Date.now() > REFRESH_MARGIN_MS) return current.tokens.access_token;
  return (await refreshTokens(current.tokens))?.access_token ?? null;
}

interface RequestOptions {
  body?: unknown;
  auth?: boolean;
  headers?: Record<string, string>;
  /** How many times a 503 (overload, with Retry-After) is retried; only for requests safe to repeat. */
  retries?: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function problemOf(status: number, data: unknown, statusText: string): Problem {
  if (data && typeof data === 'object' && 'title' in data) return { ...(data as Problem), status };
  return { title: statusText || 'Error', status, detail: `The server answered ${status}.` };
}

export async function request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
  const { body, auth = false, headers = {}, retries = method === 'GET' ? 2 : 0 } = options;
  const send = (token: string | null) =>
    fetch(API + path, {
      method,
      headers: {
        accept: 'application/json',
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  const token = auth ? await accessToken() : null;
  if (auth && !token) throw new ApiError({ title: 'Unauthorized', status: 401, detail: 'Log in to continue.' });
  let response = await send(token);
  if (response.status === 401 && auth) {
    const current = session.get();
    const refreshed = current ? await refreshTokens(current.tokens) : null;
    if (refreshed) response = await send(refreshed.access_token);
  }
  for (let attempt = 0; response.status === 503 && attempt < retries; attempt++) {
    await sleep(Number(response.headers.get('retry-after-ms') ?? 500));
    response = await send(auth ? await accessToken() : null);
  }
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  let data: unknown = undefined;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    data = undefined;
  }
  if (!response.ok) {
    const problem = problemOf(response.status, data, response.statusText);
    problem.retry_after_ms ??= Number(response.headers.get('retry-after-ms') ?? 0) || undefined;
    throw new ApiError(problem);
  }
  return data as T;
}

/** A random Idempotency-Key (no `crypto.randomUUID`: that needs a secure context). */
export function newIdempotencyKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function query(params: Record<string, string | number | null | undefined>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== '') search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

/** How many items the cart holds, for the header; refreshed by every cart call. */
export const cartCount = createStore<number>(0);

function counted(cart: Cart): Cart {
  cartCount.set(cart.items.reduce((sum, line) => sum + line.quantity, 0));
  return cart;
}

// --- auth ---------------------------------------------------------------------------------------
export async function login(email: string, password: string): Promise<void> {
  const body = await request<TokensOut>('POST', '/auth/login', { body: { email, password } });
  saveTokens(toTokens(body));
}

export const register = (email: string, password: string, name: string) =>
  request<User>('POST', '/auth/register', { body: { email, password, name } });

export async function logout(): Promise<void> {
  const current = session.get();
  try {
    if (current) {
      await request<void>('POST', '/auth/logout', {
        body: { refresh_token: current.tokens.refresh_token },
        headers: { authorization: `Bearer ${current.tokens.access_token}` },
      });
    }
  } finally {
    saveTokens(null);
    cartCount.set(0);
  }
}

export const me = () => request<User>('GET', '/users/me', { auth: true });

// --- catalog ------------------------------------------------------------------------------------
export interface ProductQuery {
  q?: string;
  category?: string;
  sort?: string;
  limit?: number;
  cursor?: string | null;
}

export const listProducts = (params: ProductQuery) => request<Page<Product>>('GET', `/products${query({ ...params })}`);
export const getProduct = (id: string) => request<Product>('GET', `/products/${encodeURIComponent(id)}`);
export const createProduct = (product: ProductInput) =>
  request<Product>('POST', '/products', { body: product, auth: true });
export const patchProduct = (id: string, patch: ProductPatch) =>
  request<Product>('PATCH', `/products/${encodeURIComponent(id)}`, { body: patch, auth: true });
export const deleteProduct = (id: string) =>
  request<void>('DELETE', `/products/${encodeURIComponent(id)}`, { auth: true });

/** Upload an image: the API hands out a presigned S3 POST, and the file goes straight to S3. */
export async function uploadProductImage(id: string, file: File): Promise<void> {
  const grant = await request<ImageUpload>('POST', `/products/${encodeURIComponent(id)}/image`, {
    body: { content_type: file.type },
    auth: true,
  });
  const form = new FormData();
  for (const [name, value] of Object.entries(grant.upload.fields)) form.append(name, value);
  form.append('file', file);
  const response = await fetch(grant.upload.url, { method: 'POST', body: form });
  if (!response.ok) {
    throw new ApiError({
      title: 'Upload failed',
      status: response.status,
      detail: `The image store refused the upload (${response.status}); images are JPEG, PNG or WebP up to 5 MB.`,
    });
  }
}

// --- cart and orders ----------------------------------------------------------------------------
export const getCart = async () => counted(await request<Cart>('GET', '/cart', { auth: true }));
export const setQuantity = async (productId: string, quantity: number) =>
  counted(
    await request<Cart>('PUT', `/cart/items/${encodeURIComponent(productId)}`, {
      body: { quantity },
      auth: true,
      retries: 2,
    }),
  );
export const removeFromCart = async (productId: string) =>
  counted(await request<Cart>('DELETE', `/cart/items/${encodeURIComponent(productId)}`, { auth: true, retries: 2 }));

/** Checkout. The same key on a retry joins the first attempt, so a retry never charges twice. */
export const placeOrder = (body: { shipping_address: Address; payment_method: string }, idempotencyKey: string) =>
  request<Order>('POST', '/orders', { body, auth: true, headers: { 'Idempotency-Key': idempotencyKey }, retries: 3 });
export const listOrders = (cursor?: string | null) =>
  request<Page<Order>>('GET', `/orders${query({ limit: 20, cursor })}`, { auth: true });
/** Admin only: every order in a status (PAID: those to fulfil), newest first. */
export const listOrdersByStatus = (status: OrderStatus, cursor?: string | null) =>
  request<Page<Order>>('GET', `/admin/orders${query({ status, limit: 20, cursor })}`, { auth: true });
export const getOrder = (id: string) => request<Order>('GET', `/orders/${encodeURIComponent(id)}`, { auth: true });
export const cancelOrder = (id: string) =>
  request<Order>('POST', `/orders/${encodeURIComponent(id)}/cancel`, { auth: true, retries: 2 });
export const fulfilOrder = (id: string) =>
  request<Order>('POST', `/orders/${encodeURIComponent(id)}/fulfil`, { auth: true, retries: 2 });
export const invoiceLink = (id: string) =>
  request<{ url: string; expires_in: number }>('GET', `/orders/${encodeURIComponent(id)}/invoice`, { auth: true });

export const getPayment = (id: string) =>
  request<Payment>('GET', `/payments/${encodeURIComponent(id)}`, { auth: true });
export const refundPayment = (id: string, amount: number | null, idempotencyKey: string) =>
  request<Refund>('POST', `/payments/${encodeURIComponent(id)}/refunds`, {
    body: amount === null ? {} : { amount },
    auth: true,
    headers: { 'Idempotency-Key': idempotencyKey },
    retries: 2,
  });

export const listNotifications = (cursor?: string | null) =>
  request<Page<Notification>>('GET', `/notifications${query({ limit: 20, cursor })}`, { auth: true });

export const analyticsWindows = (limit = 60) =>
  request<Page<AnalyticsWindow>>('GET', `/analytics/windows${query({ limit })}`, { auth: true });
