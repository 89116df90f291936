// The checkout benchmark's load (`make bench`, driven by `python -m cloudshop.bench`): a closed loop
// of buyers, each its own pre-registered customer, with no think time. One iteration puts one unit of
// the bench product in the cart and checks out with a fresh Idempotency-Key. An overload 503 is
// honoured as a client should: wait what `retry-after-ms` (or `Retry-After`) asks, then repeat the
// step, and a refused checkout keeps its Idempotency-Key so the retry resumes the same order.
//
//   k6 run --no-usage-report -e BASE_URL=http://127.0.0.1:8000 -e PRODUCT_ID=<id> \
//          -e BUYERS_FILE=/abs/buyers.json -e VUS=25 -e DURATION=60s -e SUMMARY=/abs/summary.json \
//          tests/load/bench-checkout.js
//
// BUYERS_FILE holds `{"tokens": [access token, ...]}`, one per VU (VU n shops with token n-1).
// SUMMARY is where handleSummary writes k6's end-of-test data as JSON for the Python side.
// Nothing here is a threshold: the bench reports its targets as met or not, it never fails on them.
import http from 'k6/http';
import { sleep } from 'k6';
import { SharedArray } from 'k6/data';
import { Counter, Trend } from 'k6/metrics';
import { API, SHIPPING_ADDRESS, authHeaders, uniqueKey } from './lib/cloudshop.js';

const VUS = Number(__ENV.VUS || '25');
const DURATION = __ENV.DURATION || '60s';
const PRODUCT_ID = __ENV.PRODUCT_ID;
const SUMMARY = __ENV.SUMMARY || 'bench-checkout-summary.json';
const SLOW_MS = Number(__ENV.SLOW_MS || '5000');

// Parsed once and shared by every VU (a plain open() per VU would parse it VUS times).
const tokens = new SharedArray('buyers', () => (__ENV.BUYERS_FILE ? JSON.parse(open(__ENV.BUYERS_FILE)).tokens : []));

export const checkouts = new Counter('checkouts');
export const postOrders = new Trend('post_orders_ms', true); // POST /orders answered 201 PAID
export const loopDuration = new Trend('checkout_loop_ms', true); // cart PUT + POST /orders, succeeded
export const overloaded = new Counter('overload_503'); // 503 with Retry-After: the fast refusal
export const overloadedMs = new Trend('overload_503_ms', true);
export const slowRequests = new Counter('slow_requests'); // any request slower than SLOW_MS
export const transportErrors = new Counter('failures_transport'); // no answer (status 0)
export const serverErrors = new Counter('failures_5xx'); // 5xx other than a 503 with Retry-After
export const clientErrors = new Counter('failures_4xx');
export const notPaid = new Counter('failures_not_paid'); // 201 with another status than PAID

export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)'],
  scenarios: {
    checkout: { executor: 'constant-vus', vus: VUS, duration: DURATION, gracefulStop: '30s' },
  },
};

const orderBody = JSON.stringify({ shipping_address: SHIPPING_ADDRESS, payment_method: 'pm_card_ok' });
const cartBody = JSON.stringify({ quantity: 1 });
// After a failure that asked for no particular wait: a short pause, so a broken platform is not
// also hammered in a tight loop (and k6 does not eat the CPU the services are measured on).
const FAILURE_PAUSE_SECONDS = 0.1;
let pendingKey = null; // per VU: the key of a checkout refused with a 503, to resume it

function retryAfterSeconds(response) {
  const ms = response.headers['Retry-After-Ms'];
  if (ms && /^\d+$/.test(ms)) {
    return Number(ms) / 1000;
  }
  const seconds = response.headers['Retry-After'];
  return seconds && /^\d+$/.test(seconds) ? Number(seconds) : null;
}

/** Counts a failed answer by class; returns how long to wait before the next request. */
function failed(response, elapsedMs) {
  if (response.status === 503) {
    const wait = retryAfterSeconds(response);
    if (wait !== null) {
      overloaded.add(1);
      overloadedMs.add(elapsedMs);
      return wait;
    }
  }
  if (response.status === 0) {
    transportErrors.add(1);
  } else if (response.status >= 500) {
    serverErrors.add(1);
  } else {
    clientErrors.add(1);
  }
  return FAILURE_PAUSE_SECONDS;
}

function timed(send) {
  const started = Date.now();
  const response = send();
  const elapsed = Date.now() - started;
  if (elapsed > SLOW_MS) {
    slowRequests.add(1);
  }
  return [response, elapsed];
}

export default function () {
  const token = tokens[(__VU - 1) % tokens.length];
  const started = Date.now();
  const [cart, cartMs] = timed(() =>
    http.put(`${API}/cart/items/${encodeURIComponent(PRODUCT_ID)}`, cartBody, {
      headers: authHeaders(token),
      tags: { name: 'PUT /cart/items/{id}' },
    }),
  );
  if (cart.status !== 200 && cart.status !== 201) {
    sleep(failed(cart, cartMs));
    return;
  }
  const key = pendingKey || uniqueKey();
  const [order, orderMs] = timed(() =>
    http.post(`${API}/orders`, orderBody, {
      headers: authHeaders(token, { 'Idempotency-Key': key }),
      tags: { name: 'POST /orders' },
      responseType: 'text',
    }),
  );
  if (order.status === 201) {
    pendingKey = null;
    let status = null;
    try {
      status = order.json('status');
    } catch (error) {
      status = null;
    }
    if (status === 'PAID') {
      checkouts.add(1);
      postOrders.add(order.timings.duration);
      loopDuration.add(Date.now() - started);
    } else {
      notPaid.add(1);
    }
    return;
  }
  const wait = failed(order, orderMs);
  pendingKey = order.status === 503 ? key : null;
  sleep(wait);
}

export function handleSummary(data) {
  const count = (name) => (data.metrics[name] ? data.metrics[name].values.count : 0);
  const line =
    `[bench-checkout] ${VUS} VUs: ${count('checkouts')} checkouts, ${count('overload_503')} overload 503s, ` +
    `${count('failures_transport') + count('failures_5xx') + count('failures_4xx') + count('failures_not_paid')} ` +
    `other failures, ${count('slow_requests')} requests over ${SLOW_MS} ms\n`;
  return { [SUMMARY]: JSON.stringify(data, null, 1), stdout: line };
}
