import { useState } from 'preact/hooks';
import {
  cancelOrder,
  fulfilOrder,
  getOrder,
  getPayment,
  newIdempotencyKey,
  type Order,
  type Payment,
  refundPayment,
} from '../api';
import { dateTime, declineMessage, money, toMinorUnits } from '../format';
import { AddressBlock, OrderLines, shortId, StatusBadge } from '../pages/Orders';
import { Alert, Field, Notice, usePolling } from '../ui';

const RECENT_KEY = 'cloudshop.admin.recent-orders';

function recent(): string[] {
  try {
    return JSON.parse(sessionStorage.getItem(RECENT_KEY) ?? '[]') as string[];
  } catch {
    return [];
  }
}

function remember(id: string): string[] {
  const ids = [id, ...recent().filter((other) => other !== id)].slice(0, 10);
  sessionStorage.setItem(RECENT_KEY, JSON.stringify(ids));
  return ids;
}

/**
 * Fulfil, cancel and refund. The public API lists a buyer's own orders only, so the console finds an
 * order by its id (on the buyer's order page, in their notifications and in the invoice).
 */
export function AdminOrders() {
  const [lookup, setLookup] = useState('');
  const [order, setOrder] = useState<Order | null>(null);
  const [payment, setPayment] = useState<Payment | null>(null);
  const [ids, setIds] = useState<string[]>(recent());
  const [refund, setRefund] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const [notice, setNotice] = useState('');

  async function load(id: string) {
    setError(undefined);
    try {
      const found = await getOrder(id.trim());
      setOrder(found);
      setPayment(found.payment_id ? await getPayment(found.payment_id) : null);
      setIds(remember(found.id));
    } catch (failure) {
      setOrder(null);
      setPayment(null);
      setError(failure);
    }
  }

  // The order changes on its own after a refund (the payment's event reaches the order service).
  usePolling(() => void (order ? load(order.id) : undefined), 3000, order !== null);

  async function act(what: string, action: () => Promise<unknown>) {
    setBusy(true);
    setError(undefined);
    try {
      await action();
      setNotice(what);
      if (order) await load(order.id);
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  }

  function refundNow(event: Event) {
    event.preventDefault();
    if (!order?.payment_id) return;
    const amount = refund.trim() ? toMinorUnits(refund) : null;
    if (refund.trim() && (amount === null || amount < 1)) {
      setError(new Error('A refund amount is positive with at most two decimals; leave it empty to refund the rest.'));
      return;
    }
    const paymentId = order.payment_id;
    void act(
      amount === null ? 'Refunded in full.' : `Refunded ${money({ amount, currency: order.total.currency })}.`,
      () => refundPayment(paymentId, amount, newIdempotencyKey()),
    );
    setRefund('');
  }

  return (
    <div>
      <Notice>{notice}</Notice>
      <Alert error={error} />
      <form
        class="toolbar"
        role="search"
        onSubmit={(e) => {
          e.preventDefault();
          void load(lookup);
        }}
      >
        <label for="order-id">Order id</label>
        <input
          id="order-id"
          required
          pattern="[A-Za-z0-9_\-]+"
          value={lookup}
          onInput={(e) => setLookup(e.currentTarget.value)}
        />
        <button type="submit">Find order</button>
      </form>
      {ids.length > 0 && (
        <nav aria-label="Recently opened orders" class="recent">
          Recent:{' '}
          {ids.map((id) => (
            <button key={id} type="button" class="link-button" onClick={() => void load(id)}>
              {shortId(id)}
            </button>
          ))}
        </nav>
      )}
      {order && (
        <article class="panel" aria-labelledby="admin-order-title">
          <h2 id="admin-order-title">Order {shortId(order.id)}</h2>
          <p>
            Status: <StatusBadge status={order.status} /> · placed {dateTime(order.created_at)} · buyer{' '}
            <code>{order.user_id}</code>
          </p>
          {order.status === 'PAYMENT_FAILED' && <p>{declineMessage(order.failure_reason)}</p>}
          <OrderLines order={order} />
          <AddressBlock order={order} />
          {payment && (
            <p>
              Payment <code>{payment.id}</code>: {payment.status}, {money(payment.amount)} captured,{' '}
              {money(payment.refunded)} refunded.
            </p>
          )}
          <div class="actions">
            {order.status === 'PAID' && (
              <button
                type="button"
                disabled={busy}
                onClick={() => void act('Marked as shipped.', () => fulfilOrder(order.id))}
              >
                Fulfil
              </button>
            )}
            {order.status === 'PAID' && (
              <button
                type="button"
                class="danger"
                disabled={busy}
                onClick={() => void act('Cancelled and refunded.', () => cancelOrder(order.id))}
              >
                Cancel order
              </button>
            )}
          </div>
          {(order.status === 'PAID' || order.status === 'FULFILLED') && order.payment_id && (
            <form class="refund" onSubmit={refundNow}>
              <Field
                id="refund-amount"
                label={`Refund amount (${order.total.currency})`}
                hint="Leave empty to refund everything left"
              >
                <input
                  id="refund-amount"
                  inputMode="decimal"
                  aria-describedby="refund-amount-hint"
                  value={refund}
                  onInput={(e) => setRefund(e.currentTarget.value)}
                />
              </Field>
              <button type="submit" class="danger" disabled={busy}>
                Refund
              </button>
            </form>
          )}
        </article>
      )}
    </div>
  );
}
