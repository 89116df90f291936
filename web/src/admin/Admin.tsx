import { useRoute } from 'preact-iso';
import { PageTitle } from '../ui';
import { AnalyticsPanel } from './Analytics';
import { AdminOrders } from './Orders';
import { AdminProducts } from './Products';

const SECTIONS = {
  products: { label: 'Products', Panel: AdminProducts },
  orders: { label: 'Orders', Panel: AdminOrders },
  analytics: { label: 'Analytics', Panel: AnalyticsPanel },
} as const;

type Section = keyof typeof SECTIONS;

/** The admin console: the same public API as the shop, with an admin's token. */
export function Admin() {
  const { params } = useRoute();
  const section: Section = params.section && params.section in SECTIONS ? (params.section as Section) : 'products';
  const { label, Panel } = SECTIONS[section];
  return (
    <section class="admin">
      <PageTitle title={`Admin: ${label}`}>Admin: {label}</PageTitle>
      <nav class="tabs" aria-label="Admin sections">
        {(Object.keys(SECTIONS) as Section[]).map((key) => (
          <a
            key={key}
            href={key === 'products' ? '/admin' : `/admin/${key}`}
            aria-current={key === section ? 'page' : undefined}
          >
            {SECTIONS[key].label}
          </a>
        ))}
      </nav>
      <Panel />
    </section>
  );
}
