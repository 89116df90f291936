// Load test: browse + checkout through the API gateway, ramping virtual users until the order and
// payment HPAs scale out. Run it against a demo cluster (15% CPU / 30% memory targets) and watch:
//
//   k6 run --no-usage-report -e BASE_URL=https://<api-id>.execute-api.<region>.amazonaws.com tests/load/checkout.js
//   kubectl -n cloudshop get hpa -w
//
// Environment: BASE_URL (the gateway, required), PEAK_VUS (default 50), CHECKOUT_SHARE (default
// 0.3: the share of iterations that buy), THINK_SECONDS (default 1), RUN_ID (account names).
import { createShoppers, shop } from './lib/cloudshop.js';

const PEAK_VUS = Number(__ENV.PEAK_VUS || '50');
const CHECKOUT_SHARE = Number(__ENV.CHECKOUT_SHARE || '0.3');
// The VU curve lives in stages.json, which `make loadtest` (cloudshop/hpa_replay.py) replays through
// the HPA algorithm too: one source of truth for both.
const CURVE = JSON.parse(open('./stages.json'));

export const options = {
  setupTimeout: '5m',
  scenarios: {
    shoppers: {
      executor: 'ramping-vus',
      startVUs: CURVE.start_vus,
      // Warm up, climb past what two pods absorb, hold long enough for the HPA (15 s metrics, 30 s
      // scale-up periods) to add pods, then come down so the 5-minute scale-down window shows too.
      stages: CURVE.stages.map((s) => ({ duration: s.duration, target: Math.ceil(PEAK_VUS * s.peak_share) })),
      gracefulRampDown: '30s',
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    http_req_duration: ['p(95)<800'],
    'http_req_duration{name:POST /orders}': ['p(95)<1500'],
    checkout_duration: ['p(99)<3000'],
    checks: ['rate>0.99'],
  },
};

export function setup() {
  return createShoppers(PEAK_VUS);
}

export default function (data) {
  shop(data, CHECKOUT_SHARE);
}
