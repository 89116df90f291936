import { useLocation, useRoute } from 'preact-iso';
import { useEffect, useRef, useState } from 'preact/hooks';
import { cancelOrder, getOrder, invoiceLink, listOrders, type Order, type OrderStatus } from '../api';
import { dateTime, declineMessage, money, STATUS_LABELS } from '../format';
import { Alert, Loading, Notice, PageTitle, useAsync, usePolling } from '../ui';

const LIVE_MS = 3000;
const INVOICED: OrderStatus[] = ['PAID', 'FULFILLED', 'REFUNDED', 'CANCELLED'];

export const shortId = (id: string) => `#${id.replace(/^ord_/, '').slice(0, 8).toUpperCase()}`;

export function StatusBadge({ status }: { status: OrderStatus }) {
  return (
    <span class={`status status-${status.toLowerCase()}`} data-status={status}>
      {STATUS_LABELS[status] ?? status}
    </span>
  );
}

export function Orders() {
  const [cursor, setCursor] = useState<string | null>(null);
  const orders = useAsync(() => listOrders(cursor), [cursor]);
  // Live status: the list is read again every few seconds while the page is visible.
  usePolling(orders.reload, LIVE_MS * 2);
  return (
    <section>
      <PageTitle title="Your orders">Your orders</PageTitle>
      <Alert error={orders.error} />
      {!orders.data ? (
        orders.loading && <Loading what="Loading your orders" />
      ) : orders.data.items.length === 0 ? (
        <p>
          No orders yet. <a href="/">Start shopping</a>.
        </p>
      ) : (
        <table class="orders">
          <caption class="visually-hidden">Your orders, newest first; statuses update live</caption>
          <thead>
            <tr>
              <th scope="col">Order</th>
              <th scope="col">Placed</th>
              <th scope="col" class="num">
                Items
              </th>
              <th scope="col" class="num">
                Total
              </th>
              <th scope="col">Status</th>
            </tr>
          </thead>
          <tbody aria-live="polite">
            {orders.data.items.map((order) => (
              <tr key={order.id}>
                <th scope="row">
                  <a href={`/orders/${order.id}`}>{shortId(order.id)}</a>
                </th>
                <td>{dateTime(order.created_at)}</td>
                <td class="num">{order.items}</td>
                <td class="num">{money(order.total)}</td>
                <td>
                  <StatusBadge status={order.status} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <nav class="pager" aria-label="Pages">
        {cursor && (
          <button type="button" class="secondary" onClick={() => setCursor(null)}>
            Newest orders
          </button>
        )}
        {orders.data?.next_cursor && (
          <button type="button" class="secondary" onClick={() => setCursor(orders.data?.next_cursor ?? null)}>
            Older orders
          </button>
        )}
      </nav>
    </section>
  );
}

export function Invoice({ order }: { order: Order }) {
  const [link, setLink] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(undefined);
  const [busy, setBusy] = useState(false);
  const anchor = useRef<HTMLAnchorElement>(null);
  useEffect(() => {
    if (link) anchor.current?.focus();
  }, [link]);
  if (!INVOICED.includes(order.status) || !order.payment_id) return null;

  async function fetchLink() {
    setBusy(true);
    setError(undefined);
    try {
      setLink((await invoiceLink(order.id)).url);
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  }

  return (
    <div class="invoice">
      <button type="button" class="secondary" disabled={busy} onClick={() => void fetchLink()}>
        {busy ? 'Preparing the invoice…' : 'Download invoice'}
      </button>
      {link && (
        <a ref={anchor} href={link} target="_blank" rel="noopener noreferrer" class="invoice-link">
          Open the invoice for {shortId(order.id)} (link valid for 15 minutes)
        </a>
      )}
      <Alert error={error} />
    </div>
  );
}

export function OrderLines({ order }: { order: Order }) {
  return (
    <table class="lines">
      <caption class="visually-hidden">Items of order {shortId(order.id)}</caption>
      <thead>
        <tr>
          <th scope="col">Product</th>
          <th scope="col" class="num">
            Quantity
          </th>
          <th scope="col" class="num">
            Price
          </th>
          <th scope="col" class="num">
            Total
          </th>
        </tr>
      </thead>
      <tbody>
        {order.lines.map((line) => (
          <tr key={line.product_id}>
            <th scope="row">{line.name}</th>
            <td class="num">{line.quantity}</td>
            <td class="num">{money(line.unit_price)}</td>
            <td class="num">{money(line.line_total)}</td>
          </tr>
        ))}
      </tbody>
      <tfoot>
        <tr>
          <th scope="row" colSpan={3}>
            Total
          </th>
          <td class="num total">{money(order.total)}</td>
        </tr>
      </tfoot>
    </table>
  );
}

export function AddressBlock({ order }: { order: Order }) {
  const a = order.shipping_address;
  return (
    <address>
      {a.name}
      <br />
      {a.line1}
      {a.line2 && (
        <>
          <br />
          {a.line2}
        </>
      )}
      <br />
      {a.city}, {a.state} {a.postal_code}
      <br />
      {a.country}
    </address>
  );
}

export function OrderDetail() {
  const { params } = useRoute();
  const { query } = useLocation();
  const id = params.id ?? '';
  const order = useAsync(() => getOrder(id), [id]);
  const [error, setError] = useState<unknown>(undefined);
  const [notice, setNotice] = useState('');
  usePolling(order.reload, LIVE_MS);

  async function cancel() {
    if (!confirm('Cancel this order? A paid order is refunded in full.')) return;
    setError(undefined);
    try {
      order.setData(await cancelOrder(id));
      setNotice('The order is cancelled and its payment refunded.');
    } catch (failure) {
      setError(failure);
    }
  }

  if (!order.data) {
    return order.error ? (
      <section>
        <PageTitle title="Order not found">Order not found</PageTitle>
        <Alert error={order.error} />
      </section>
    ) : (
      <Loading what="Loading the order" />
    );
  }
  const o = order.data;
  return (
    <section class="order">
      <PageTitle title={`Order ${shortId(o.id)}`}>Order {shortId(o.id)}</PageTitle>
      <Notice>
        {notice ||
          (query.placed && o.status === 'PAID'
            ? 'Thank you! Your payment went through and your order is confirmed.'
            : '')}
      </Notice>
      <Alert error={error} />
      <p class="order-status">
        Status: <StatusBadge status={o.status} /> <span class="hint">(updates live)</span>
      </p>
      {o.status === 'PAYMENT_FAILED' && <p class="alert">{declineMessage(o.failure_reason)}</p>}
      <p>
        Placed {dateTime(o.created_at)} · order id <code>{o.id}</code>
      </p>
      <OrderLines order={o} />
      <h2>Shipping to</h2>
      <AddressBlock order={o} />
      <Invoice order={o} />
      {o.status === 'PAID' && (
        <button type="button" class="danger" onClick={() => void cancel()}>
          Cancel order
        </button>
      )}
      <p>
        <a href="/orders">All your orders</a>
      </p>
    </section>
  );
}
