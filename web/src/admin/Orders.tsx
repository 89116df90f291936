import { useEffect, useState } from 'preact/hooks';
import {
  cancelOrder,
  fulfilOrder,
  getOrder,
  getPayment,
  listOrdersByStatus,
  newIdempotencyKey,
  type Order,
  type OrderStatus,
  type Payment,
  refundPayment,
} from '../api';
import { dateTime, declineMessage, money, STATUS_LABELS, toMinorUnits } from '../format';
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

const STATUSES = Object.keys(STATUS_LABELS) as OrderStatus[];

/** The orders in one status (PAID by default: those to fulfil), newest first, a page at a time. */
function OrderList({ onOpen, version }: { onOpen: (id: string) => void; version: number }) {
  const [status, setStatus] = useState<OrderStatus>('PAID');
  // The cursors of the pages before this one (the first page's is null), and this page's.
  const [trail, setTrail] = useState<(string | null)[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [orders, setOrders] = useState<Order[] | null>(null);
  const [next, setNext] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(undefined);

  useEffect(() => {
    let current = true;
    setError(undefined);
    listOrdersByStatus(status, cursor).then(
      (page) => {
        if (!current) return;
        setOrders(page.items);
        setNext(page.next_cursor);
      },
      (failure: unknown) => {
        if (current) setError(failure);
      },
    );
    return () => {
      current = false;
    };
  }, [status, cursor, version]);

  return (
    <section class="panel" aria-labelledby="to-fulfil-title">
      <h2 id="to-fulfil-title">{status === 'PAID' ? 'Orders to fulfil' : `Orders: ${STATUS_LABELS[status]}`}</h2>
      <Alert error={error} />
      <div class="toolbar">
        <label for="order-status">Status</label>
        <select
          id="order-status"
          value={status}
          onChange={(e) => {
            setStatus(e.currentTarget.value as OrderStatus);
            setTrail([]);
            setCursor(null);
          }}
        >
          {STATUSES.map((s) => (
            <option key={s} value={s}>
              {STATUS_LABELS[s]}
            </option>
          ))}
        </select>
      </div>
      {orders && orders.length === 0 && <p>No orders in this status.</p>}
      {orders && orders.length > 0 && (
        <div class="table-scroll">
          <table class="orders">
            <caption class="visually-hidden">Orders, newest first</caption>
            <thead>
              <tr>
                <th scope="col">Order</th>
                <th scope="col">Placed (UTC)</th>
                <th scope="col" class="num">
                  Total
                </th>
                <th scope="col">Status</th>
              </tr>
            </thead>
            <tbody>
              {orders.map((o) => (
                <tr key={o.id} data-order-id={o.id}>
                  <th scope="row">
                    <button
                      type="button"
                      class="link-button"
                      aria-label={`Open order ${shortId(o.id)}`}
                      onClick={() => onOpen(o.id)}
                    >
                      {shortId(o.id)}
                    </button>
                  </th>
                  <td>{dateTime(o.created_at)}</td>
                  <td class="num">{money(o.total)}</td>
                  <td>
                    <StatusBadge status={o.status} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <nav aria-label="Pages of orders" class="actions">
        <button
          type="button"
          disabled={trail.length === 0}
          onClick={() => {
            setCursor(trail[trail.length - 1] ?? null);
            setTrail(trail.slice(0, -1));
          }}
        >
          Previous page
        </button>
        <button
          type="button"
          disabled={!next}
          onClick={() => {
            setTrail([...trail, cursor]);
            setCursor(next);
          }}
        >
          Next page
        </button>
      </nav>
    </section>
  );
}

/**
 * Fulfil, cancel and refund: an order is opened from the list of orders in a status (PAID: to
 * fulfil) or found by its id (on the buyer's order page, in their notifications and in the invoice).
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
  const [version, setVersion] = useState(0);

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
      setVersion((v) => v + 1);
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
      <OrderList
        onOpen={(id) => void load(id).then(() => document.getElementById('admin-order-title')?.focus())}
        version={version}
      />
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
          <h2 id="admin-order-title" tabIndex={-1}>
            Order {shortId(order.id)}
          </h2>
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
