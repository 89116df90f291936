import type { ComponentChildren } from 'preact';
import { ErrorBoundary, lazy, LocationProvider, Route, Router, useLocation } from 'preact-iso';
import { useEffect, useState } from 'preact/hooks';
import { cartCount, getCart, logout } from './api';
import { CartPage } from './pages/Cart';
import { Checkout } from './pages/Checkout';
import { Login, Register } from './pages/Auth';
import { Notifications } from './pages/Notifications';
import { OrderDetail, Orders } from './pages/Orders';
import { ProductPage } from './pages/Product';
import { Shop } from './pages/Shop';
import { session } from './session';
import { useStore } from './store';
import { Alert, markNavigation, PageTitle } from './ui';

// The admin console is its own chunk: shoppers never download it.
const Admin = lazy(() => import('./admin/Admin').then((m) => m.Admin));

function NavLink({ href, children, label }: { href: string; children: ComponentChildren; label?: string }) {
  const { path } = useLocation();
  const current = href === '/' ? path === '/' : path === href || path.startsWith(`${href}/`);
  return (
    <a href={href} aria-current={current ? 'page' : undefined} aria-label={label}>
      {children}
    </a>
  );
}

function Header() {
  const user = useStore(session);
  const count = useStore(cartCount);
  const { route } = useLocation();
  const [open, setOpen] = useState(false);
  const { path } = useLocation();
  useEffect(() => setOpen(false), [path]);
  useEffect(() => {
    if (user) getCart().catch(() => undefined);
  }, [user?.claims.sub]);

  async function signOut() {
    await logout().catch(() => undefined);
    route('/');
  }

  return (
    <header class="site-header">
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <div class="bar">
        <a class="brand" href="/">
          cloudshop
        </a>
        <button
          type="button"
          class="menu-toggle"
          aria-expanded={open}
          aria-controls="site-nav"
          onClick={() => setOpen(!open)}
        >
          Menu
        </button>
      </div>
      <nav id="site-nav" class={open ? 'open' : ''} aria-label="Main">
        <NavLink href="/">Shop</NavLink>
        {user ? (
          <>
            <NavLink href="/cart" label={`Cart, ${count} ${count === 1 ? 'item' : 'items'}`}>
              Cart <span class="badge">{count}</span>
            </NavLink>
            <NavLink href="/orders">Orders</NavLink>
            <NavLink href="/notifications">Notifications</NavLink>
            {user.claims.role === 'admin' && <NavLink href="/admin">Admin</NavLink>}
            <span class="who">{user.claims.email}</span>
            <button type="button" class="link-button" onClick={() => void signOut()}>
              Log out
            </button>
          </>
        ) : (
          <>
            <NavLink href="/login">Log in</NavLink>
            <NavLink href="/register">Register</NavLink>
          </>
        )}
      </nav>
    </header>
  );
}

/** Pages for signed-in people: anyone else is sent to log in, and back here afterwards. */
function Private({ children, admin = false }: { children: ComponentChildren; admin?: boolean }) {
  const user = useStore(session);
  const { url, route } = useLocation();
  useEffect(() => {
    if (!user) route(`/login?next=${encodeURIComponent(url)}`, true);
  }, [user, url]);
  if (!user) return null;
  if (admin && user.claims.role !== 'admin') {
    return (
      <section>
        <PageTitle title="Admins only">Admins only</PageTitle>
        <p>This console is for administrators. You are signed in as a customer.</p>
      </section>
    );
  }
  return <>{children}</>;
}

function NotFound() {
  return (
    <section>
      <PageTitle title="Page not found">Page not found</PageTitle>
      <p>
        There is no page here. <a href="/">Back to the shop</a>.
      </p>
    </section>
  );
}

const privately = (Page: () => ComponentChildren, admin = false) =>
  function PrivatePage() {
    return (
      <Private admin={admin}>
        <Page />
      </Private>
    );
  };

const CartRoute = privately(() => <CartPage />);
const CheckoutRoute = privately(() => <Checkout />);
const OrdersRoute = privately(() => <Orders />);
const OrderRoute = privately(() => <OrderDetail />);
const NotificationsRoute = privately(() => <Notifications />);
const AdminRoute = privately(() => <Admin />, true);

export function App() {
  const [failure, setFailure] = useState<Error | null>(null);
  return (
    <LocationProvider>
      <Header />
      <main id="main" tabIndex={-1}>
        <Alert error={failure ?? undefined} />
        <ErrorBoundary onError={(error) => setFailure(error)}>
          <Router onRouteChange={markNavigation}>
            <Route path="/" component={Shop} />
            <Route path="/products/:id" component={ProductPage} />
            <Route path="/cart" component={CartRoute} />
            <Route path="/checkout" component={CheckoutRoute} />
            <Route path="/orders" component={OrdersRoute} />
            <Route path="/orders/:id" component={OrderRoute} />
            <Route path="/notifications" component={NotificationsRoute} />
            <Route path="/login" component={Login} />
            <Route path="/register" component={Register} />
            <Route path="/admin/:section?" component={AdminRoute} />
            <Route default component={NotFound} />
          </Router>
        </ErrorBoundary>
      </main>
      <footer class="site-footer">
        <p>A demo shop: payments use the simulated provider's test tokens, never card numbers.</p>
      </footer>
    </LocationProvider>
  );
}
