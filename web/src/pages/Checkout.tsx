import { useLocation } from 'preact-iso';
import { useRef, useState } from 'preact/hooks';
import { type Address, ApiError, cartCount, getCart, getProduct, newIdempotencyKey, placeOrder } from '../api';
import { declineMessage, TEST_PAYMENT_METHODS } from '../format';
import { Alert, Field, Loading, PageTitle, useAsync } from '../ui';
import { CartLines } from './Cart';

const EMPTY: Address = { name: '', line1: '', line2: '', city: '', state: '', postal_code: '', country: 'IN' };

const ADDRESS_FIELDS: { key: keyof Address; label: string; autocomplete: string; hint?: string; optional?: boolean }[] =
  [
    { key: 'name', label: 'Full name', autocomplete: 'name' },
    { key: 'line1', label: 'Address line 1', autocomplete: 'address-line1' },
    { key: 'line2', label: 'Address line 2', autocomplete: 'address-line2', optional: true },
    { key: 'city', label: 'City', autocomplete: 'address-level2' },
    { key: 'state', label: 'State or region', autocomplete: 'address-level1' },
    { key: 'postal_code', label: 'Postal code', autocomplete: 'postal-code' },
    { key: 'country', label: 'Country code', autocomplete: 'country', hint: 'Two letters, e.g. IN, GB, US' },
  ];

/** Names the products the checkout found short, with what is left of each. */
async function shortageMessage(ids: string[], names: Map<string, string>): Promise<string> {
  const parts = await Promise.all(
    ids.map(async (id) => {
      const name = names.get(id) ?? id;
      try {
        const product = await getProduct(id);
        return product.stock > 0 ? `${name} (only ${product.stock} left)` : `${name} (sold out)`;
      } catch {
        return name;
      }
    }),
  );
  return `Not enough stock for: ${parts.join(', ')}. Lower the quantity or remove ${
    ids.length === 1 ? 'it' : 'them'
  } in your cart, then check out again. Nothing was charged.`;
}

export function Checkout() {
  const { route } = useLocation();
  const cart = useAsync(getCart, []);
  const [address, setAddress] = useState<Address>(EMPTY);
  const [method, setMethod] = useState('pm_card_ok');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>('');
  const [short, setShort] = useState<string[]>([]);
  // One key per checkout attempt: a retry after a lost answer reuses it and joins the first attempt.
  const attempt = useRef<{ key: string; body: string } | null>(null);
  const errorRef = useRef<HTMLDivElement>(null);

  function fail(message: string) {
    setError(message);
    requestAnimationFrame(() => errorRef.current?.focus());
  }

  async function submit(event: Event) {
    event.preventDefault();
    const shipping_address = {
      ...address,
      country: address.country.trim().toUpperCase(),
      line2: address.line2 || null,
    };
    const body = { shipping_address, payment_method: method };
    const fingerprint = JSON.stringify(body);
    if (attempt.current?.body !== fingerprint) attempt.current = { key: newIdempotencyKey(), body: fingerprint };
    setBusy(true);
    setError('');
    setShort([]);
    try {
      const order = await placeOrder(body, attempt.current.key);
      attempt.current = null;
      if (order.status === 'PAYMENT_FAILED') {
        fail(declineMessage(order.failure_reason));
        return;
      }
      cartCount.set(0);
      route(`/orders/${order.id}?placed=1`);
    } catch (failure) {
      if (failure instanceof ApiError && failure.status < 500) attempt.current = null;
      if (failure instanceof ApiError && failure.outOfStock) {
        const ids = failure.problem.products ?? [];
        const names = new Map((cart.data?.items ?? []).map((line) => [line.product_id, line.name]));
        setShort(ids);
        fail(await shortageMessage(ids, names));
      } else if (failure instanceof ApiError) {
        fail(
          failure.status >= 500
            ? `${failure.message} Your order was not lost: submit again to retry it.`
            : failure.message,
        );
      } else {
        fail('The shop cannot be reached. Submit again to retry: you will not be charged twice.');
      }
    } finally {
      setBusy(false);
    }
  }

  if (!cart.data) return cart.error ? <Alert error={cart.error} /> : <Loading what="Loading your cart" />;
  if (cart.data.items.length === 0) {
    return (
      <section>
        <PageTitle title="Checkout">Checkout</PageTitle>
        <p>
          Your cart is empty. <a href="/">Browse the shop</a>.
        </p>
      </section>
    );
  }
  return (
    <section class="checkout">
      <PageTitle title="Checkout">Checkout</PageTitle>
      <div ref={errorRef} tabIndex={-1}>
        {error && (
          <div class="alert" role="alert" data-testid="checkout-error">
            {error}
          </div>
        )}
      </div>
      <h2>Order summary</h2>
      <CartLines cart={cart.data} short={short} />
      <p>
        <a href="/cart">Change the cart</a>
      </p>
      <form onSubmit={(e) => void submit(e)}>
        <fieldset>
          <legend>Shipping address</legend>
          {ADDRESS_FIELDS.map((field) => (
            <Field
              key={field.key}
              id={`address-${field.key}`}
              label={field.label + (field.optional ? ' (optional)' : '')}
              hint={field.hint}
            >
              <input
                id={`address-${field.key}`}
                name={field.key}
                autoComplete={field.autocomplete}
                required={!field.optional}
                maxLength={field.key === 'country' ? 2 : field.key === 'postal_code' ? 12 : 200}
                pattern={
                  field.key === 'country'
                    ? '[A-Za-z]{2}'
                    : field.key === 'postal_code'
                      ? '[A-Za-z0-9 \\-]{2,12}'
                      : undefined
                }
                aria-describedby={field.hint ? `address-${field.key}-hint` : undefined}
                value={address[field.key] ?? ''}
                onInput={(e) => setAddress({ ...address, [field.key]: e.currentTarget.value })}
              />
            </Field>
          ))}
        </fieldset>
        <fieldset>
          <legend>Payment method</legend>
          <p class="hint">This shop uses a simulated payment provider: pick a test token.</p>
          {TEST_PAYMENT_METHODS.map((option) => (
            <div class="radio" key={option.token}>
              <input
                type="radio"
                id={`pm-${option.token}`}
                name="payment_method"
                value={option.token}
                checked={method === option.token}
                onChange={() => setMethod(option.token)}
              />
              <label for={`pm-${option.token}`}>
                {option.label} <code>{option.token}</code>
              </label>
            </div>
          ))}
        </fieldset>
        <button type="submit" disabled={busy}>
          {busy ? 'Paying…' : 'Place order and pay'}
        </button>
      </form>
    </section>
  );
}
