// The shopper journey through the API gateway, shared by checkout.js (load) and smoke.js.
//
// Each virtual user shops as its own customer (a cart belongs to one user), so setup() registers
// and logs in one account per VU and hands the tokens out by VU number.
import http from 'k6/http';
import { check, fail, group, sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8000').replace(/\/+$/, '');
export const API = `${BASE_URL}/api/v1`;
const PASSWORD = __ENV.LOADTEST_PASSWORD || 'Load-test-passw0rd!';
const THINK_SECONDS = Number(__ENV.THINK_SECONDS || '1');

export const checkoutDuration = new Trend('checkout_duration', true);
export const ordersPlaced = new Counter('orders_placed');
export const outOfStock = new Counter('orders_out_of_stock');

const JSON_HEADERS = { 'Content-Type': 'application/json' };
export const SHIPPING_ADDRESS = {
  name: 'Load Test',
  line1: '1 MG Road',
  city: 'Bengaluru',
  state: 'KA',
  postal_code: '560001',
  country: 'IN',
};
// A sold-out product is a correct answer (409 problem), not a failed request.
const CHECKOUT_STATUSES = http.expectedStatuses({ min: 200, max: 299 }, 409);

export function authHeaders(token, extra = {}) {
  return { ...JSON_HEADERS, Authorization: `Bearer ${token}`, ...extra };
}

export function uniqueKey() {
  return `k6-${__VU}-${__ITER}-${Date.now()}-${Math.floor(Math.random() * 1e9)}`;
}

/** Registers (or reuses) `count` customer accounts and returns their access tokens. */
export function createShoppers(count) {
  const run = __ENV.RUN_ID || `${Date.now()}`;
  const tokens = [];
  for (let i = 0; i < count; i += 1) {
    const email = `loadtest+${run}-${i}@example.com`;
    const registered = http.post(
      `${API}/auth/register`,
      JSON.stringify({ email, password: PASSWORD, name: `Load test ${i}` }),
      { headers: JSON_HEADERS, tags: { name: 'register' },
        responseCallback: http.expectedStatuses(201, 409) },
    );
    check(registered, { 'registered (or already there)': (r) => r.status === 201 || r.status === 409 });
    const login = http.post(`${API}/auth/login`, JSON.stringify({ email, password: PASSWORD }), {
      headers: JSON_HEADERS,
      tags: { name: 'login' },
    });
    if (!check(login, { 'logged in': (r) => r.status === 200 && !!r.json('access_token') })) {
      fail(`login for ${email} answered ${login.status}: ${login.body}`);
    }
    tokens.push(login.json('access_token'));
  }
  return { tokens };
}

/** Browses the catalogue; returns a product that is in stock, or null. */
export function browse() {
  let product = null;
  group('browse', () => {
    const list = http.get(`${API}/products?limit=20`, { tags: { name: 'GET /products' } });
    check(list, { 'catalogue listed': (r) => r.status === 200 && Array.isArray(r.json('items')) });
    const items = (list.status === 200 && list.json('items')) || [];
    const inStock = items.filter((item) => item.stock === undefined || item.stock > 0);
    if (inStock.length === 0) {
      return;
    }
    const pick = inStock[Math.floor(Math.random() * inStock.length)];
    const detail = http.get(`${API}/products/${encodeURIComponent(pick.id)}`, {
      tags: { name: 'GET /products/{id}' },
    });
    check(detail, { 'product shown': (r) => r.status === 200 && r.json('id') === pick.id });
    product = pick;
  });
  return product;
}

/** Puts one unit of `product` in the cart, checks out with the test card and reads the order back. */
export function checkout(token, product) {
  group('checkout', () => {
    const cart = http.put(
      `${API}/cart/items/${encodeURIComponent(product.id)}`,
      JSON.stringify({ quantity: 1 }),
      { headers: authHeaders(token), tags: { name: 'PUT /cart/items/{id}' } },
    );
    check(cart, { 'added to cart': (r) => r.status === 200 || r.status === 201 });

    const order = http.post(
      `${API}/orders`,
      JSON.stringify({ shipping_address: SHIPPING_ADDRESS, payment_method: 'pm_card_ok' }),
      {
        headers: authHeaders(token, { 'Idempotency-Key': uniqueKey() }),
        tags: { name: 'POST /orders' },
        responseCallback: CHECKOUT_STATUSES,
      },
    );
    checkoutDuration.add(order.timings.duration);
    if (order.status === 409) {
      outOfStock.add(1);
      // Leave the cart empty for the next iteration.
      http.del(`${API}/cart/items/${encodeURIComponent(product.id)}`, null, {
        headers: authHeaders(token),
        tags: { name: 'DELETE /cart/items/{id}' },
        responseCallback: http.expectedStatuses({ min: 200, max: 299 }, 404),
      });
      return;
    }
    const placed = check(order, {
      'order placed': (r) => r.status === 201,
      'order paid': (r) => r.status === 201 && r.json('status') === 'PAID',
    });
    if (!placed) {
      return;
    }
    ordersPlaced.add(1);
    const readBack = http.get(`${API}/orders/${encodeURIComponent(order.json('id'))}`, {
      headers: authHeaders(token),
      tags: { name: 'GET /orders/{id}' },
    });
    check(readBack, { 'order readable': (r) => r.status === 200 && r.json('id') === order.json('id') });
  });
}

/** One shopper iteration: browse, and check out in `checkoutShare` of the iterations. */
export function shop(data, checkoutShare) {
  const token = data.tokens[(__VU - 1) % data.tokens.length];
  const product = browse();
  if (product && Math.random() < checkoutShare) {
    checkout(token, product);
  }
  sleep(THINK_SECONDS * (0.5 + Math.random()));
}
