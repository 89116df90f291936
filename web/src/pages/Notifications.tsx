import { useState } from 'preact/hooks';
import { listNotifications } from '../api';
import { dateTime } from '../format';
import { Alert, Loading, PageTitle, useAsync, usePolling } from '../ui';
import { shortId } from './Orders';

export function Notifications() {
  const [cursor, setCursor] = useState<string | null>(null);
  const page = useAsync(() => listNotifications(cursor), [cursor]);
  // Notifications arrive through the event queue a second or two after the order changes.
  usePolling(page.reload, 5000, cursor === null);
  return (
    <section>
      <PageTitle title="Notifications">Notifications</PageTitle>
      <Alert error={page.error} />
      {!page.data ? (
        page.loading && <Loading what="Loading your notifications" />
      ) : page.data.items.length === 0 ? (
        <p>No notifications yet. They arrive a moment after you place an order.</p>
      ) : (
        <ul class="notifications" aria-live="polite">
          {page.data.items.map((item) => (
            <li key={item.id} class="notification">
              <h2>{item.title}</h2>
              <p>{item.message}</p>
              <p class="meta">
                <time dateTime={item.occurred_at}>{dateTime(item.occurred_at)}</time> ·{' '}
                <a href={`/orders/${item.order_id}`}>Order {shortId(item.order_id)}</a>
              </p>
            </li>
          ))}
        </ul>
      )}
      <nav class="pager" aria-label="Pages">
        {cursor && (
          <button type="button" class="secondary" onClick={() => setCursor(null)}>
            Newest
          </button>
        )}
        {page.data?.next_cursor && (
          <button type="button" class="secondary" onClick={() => setCursor(page.data?.next_cursor ?? null)}>
            Older
          </button>
        )}
      </nav>
    </section>
  );
}
