import { analyticsWindows, type AnalyticsWindow } from '../api';
import { money, time, wholeMoney } from '../format';
import { Alert, Loading, usePolling, useAsync } from '../ui';

const WIDTH = 640;
const HEIGHT = 180;
const PAD = { top: 18, right: 8, bottom: 22, left: 72 };
// Up to this many bars, each carries its value above it.
const LABELLED_BARS = 16;

interface Series {
  id: string;
  label: string;
  values: number[];
  format: (value: number) => string;
  /** Shorter, for the axis and the bar labels. */
  short: (value: number) => string;
}

/** One metric per minute as a bar chart: an SVG with a title, each bar titled with its value. */
function BarChart({ series, labels }: { series: Series; labels: string[] }) {
  const max = Math.max(1, ...series.values);
  const plotWidth = WIDTH - PAD.left - PAD.right;
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const step = plotWidth / Math.max(1, series.values.length);
  const barWidth = Math.max(2, Math.min(40, step * 0.7));
  const last = series.values.length - 1;
  const labelled = series.values.length <= LABELLED_BARS;
  return (
    <figure class="chart" data-metric={series.id}>
      <figcaption id={`chart-${series.id}`}>{series.label}</figcaption>
      <svg
        viewBox={`0 0 ${WIDTH} ${HEIGHT}`}
        role="img"
        aria-labelledby={`chart-${series.id} chart-${series.id}-summary`}
      >
        <desc id={`chart-${series.id}-summary`}>
          {series.values.length} one-minute windows from {labels[0]} to {labels[last]} UTC; highest{' '}
          {series.format(Math.max(0, ...series.values))}.
        </desc>
        <line class="axis" x1={PAD.left} y1={PAD.top + plotHeight} x2={WIDTH - PAD.right} y2={PAD.top + plotHeight} />
        <line class="grid" x1={PAD.left} y1={PAD.top} x2={WIDTH - PAD.right} y2={PAD.top} />
        <text class="tick" x={PAD.left - 6} y={PAD.top + 4} text-anchor="end">
          {series.short(max)}
        </text>
        <text class="tick" x={PAD.left - 6} y={PAD.top + plotHeight} text-anchor="end">
          0
        </text>
        {series.values.map((value, i) => {
          const height = (value / max) * plotHeight;
          const x = PAD.left + i * step + (step - barWidth) / 2;
          const top = PAD.top + plotHeight - height;
          return (
            <g key={i}>
              <rect
                class="bar"
                data-point={value}
                x={x}
                y={top}
                width={barWidth}
                height={Math.max(height, value > 0 ? 1 : 0)}
              >
                <title>
                  {labels[i]}: {series.format(value)}
                </title>
              </rect>
              {labelled && (
                <>
                  <text class="value" x={x + barWidth / 2} y={top - 4} text-anchor="middle" aria-hidden="true">
                    {series.short(value)}
                  </text>
                  <text class="tick" x={x + barWidth / 2} y={HEIGHT - 6} text-anchor="middle" aria-hidden="true">
                    {labels[i]}
                  </text>
                </>
              )}
            </g>
          );
        })}
        {!labelled && labels.length > 0 && (
          <>
            <text class="tick" x={PAD.left} y={HEIGHT - 6} text-anchor="start">
              {labels[0]}
            </text>
            <text class="tick" x={WIDTH - PAD.right} y={HEIGHT - 6} text-anchor="end">
              {labels[last]}
            </text>
          </>
        )}
      </svg>
    </figure>
  );
}

/** The currency most windows earned in: one revenue chart per currency would say the same thing. */
function mainCurrency(windows: AnalyticsWindow[]): string {
  const counts = new Map<string, number>();
  for (const window of windows)
    for (const r of window.revenue) counts.set(r.currency, (counts.get(r.currency) ?? 0) + 1);
  return [...counts.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] ?? 'INR';
}

export function AnalyticsPanel() {
  const windows = useAsync(() => analyticsWindows(60), []);
  usePolling(windows.reload, 30_000);
  if (!windows.data)
    return windows.error ? <Alert error={windows.error} /> : <Loading what="Loading the analytics windows" />;
  const items = [...windows.data.items].sort((a, b) => a.window_start.localeCompare(b.window_start));
  if (items.length === 0) {
    return (
      <p role="status">
        No analytics windows yet. Run <code>make analytics-once</code> (or <code>cloudshop analytics --once</code>)
        after a few orders.
      </p>
    );
  }
  const currency = mainCurrency(items);
  const labels = items.map((w) => time(w.window_start));
  const revenue = items.map((w) => w.revenue.find((r) => r.currency === currency)?.amount ?? 0);
  const series: Series[] = [
    {
      id: 'unique-users',
      label: 'Unique users per minute',
      values: items.map((w) => w.unique_users),
      format: String,
      short: String,
    },
    { id: 'orders', label: 'Orders per minute', values: items.map((w) => w.orders), format: String, short: String },
    {
      id: 'revenue',
      label: `Revenue per minute (${currency})`,
      values: revenue,
      format: (amount) => money({ amount, currency }),
      short: (amount) => wholeMoney(amount, currency),
    },
  ];
  return (
    <div class="analytics" aria-busy={windows.loading}>
      <p>
        The streaming job's latest {items.length === 1 ? 'one-minute window' : `${items.length} one-minute windows`}{' '}
        (event time, UTC).{' '}
        <button type="button" class="secondary" onClick={windows.reload}>
          Refresh
        </button>
      </p>
      {series.map((s) => (
        <BarChart key={s.id} series={s} labels={labels} />
      ))}
      <details>
        <summary>The windows as a table</summary>
        <table class="windows">
          <caption class="visually-hidden">Analytics windows</caption>
          <thead>
            <tr>
              <th scope="col">Window (UTC)</th>
              <th scope="col" class="num">
                Unique users
              </th>
              <th scope="col" class="num">
                Orders
              </th>
              <th scope="col" class="num">
                Revenue
              </th>
              <th scope="col" class="num">
                Items sold
              </th>
              <th scope="col">Final</th>
            </tr>
          </thead>
          <tbody>
            {items.map((w) => (
              <tr key={w.window_start}>
                <th scope="row">
                  {time(w.window_start)}–{time(w.window_end)}
                </th>
                <td class="num">{w.unique_users}</td>
                <td class="num">{w.orders}</td>
                <td class="num">{w.revenue.map((r) => money(r)).join(', ') || '—'}</td>
                <td class="num">{w.items_sold}</td>
                <td>{w.final ? 'yes' : 'open'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </details>
    </div>
  );
}
