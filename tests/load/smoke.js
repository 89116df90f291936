// Smoke variant of checkout.js: one shopper, a few iterations, every step checked, strict
// thresholds. Proves the gateway, the services and this script before a load run:
//
//   k6 run --no-usage-report -e BASE_URL=http://127.0.0.1:8000 tests/load/smoke.js
import { createShoppers, shop } from './lib/cloudshop.js';

export const options = {
  vus: 1,
  iterations: Number(__ENV.ITERATIONS || '3'),
  thresholds: {
    http_req_failed: ['rate==0'],
    checks: ['rate==1'],
    orders_placed: ['count>0'],
  },
};

export function setup() {
  return createShoppers(1);
}

export default function (data) {
  shop(data, 1);
}
