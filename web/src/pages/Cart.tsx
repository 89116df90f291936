import { useState } from 'preact/hooks';
import { type Cart, getCart, removeFromCart, setQuantity } from '../api';
import { money } from '../format';
import { Alert, Loading, Notice, PageTitle, useAsync } from '../ui';

export function CartLines({ cart, short = [] }: { cart: Cart; short?: string[] }) {
  return (
    <table class="lines">
      <caption class="visually-hidden">Items in your cart</caption>
      <thead>
        <tr>
          <th scope="col">Product</th>
          <th scope="col">Quantity</th>
          <th scope="col" class="num">
            Price
          </th>
          <th scope="col" class="num">
            Total
          </th>
        </tr>
      </thead>
      <tbody>
        {cart.items.map((line) => (
          <tr key={line.product_id} class={short.includes(line.product_id) ? 'short' : undefined}>
            <th scope="row">
              <a href={`/products/${line.product_id}`}>{line.name}</a>
              {short.includes(line.product_id) && <strong class="short-label"> — not enough stock</strong>}
            </th>
            <td>{line.quantity}</td>
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
          <td class="num total">{money(cart.total)}</td>
        </tr>
      </tfoot>
    </table>
  );
}

export function CartPage() {
  const cart = useAsync(getCart, []);
  const [error, setError] = useState<unknown>(undefined);
  const [notice, setNotice] = useState('');
  const [busy, setBusy] = useState<string | null>(null);

  async function change(productId: string, name: string, quantity: number) {
    if (!Number.isInteger(quantity) || quantity < 1 || quantity > 99) {
      setError(new Error('A quantity is a whole number from 1 to 99.'));
      return;
    }
    setBusy(productId);
    setError(undefined);
    try {
      cart.setData(await setQuantity(productId, quantity));
      setNotice(`${name}: quantity ${quantity}.`);
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(null);
    }
  }

  async function remove(productId: string, name: string) {
    setBusy(productId);
    setError(undefined);
    try {
      cart.setData(await removeFromCart(productId));
      setNotice(`${name} removed from your cart.`);
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(null);
    }
  }

  return (
    <section>
      <PageTitle title="Your cart">Your cart</PageTitle>
      <Alert error={error ?? cart.error} />
      <Notice>{notice}</Notice>
      {!cart.data ? (
        cart.loading && <Loading what="Loading your cart" />
      ) : cart.data.items.length === 0 ? (
        <p>
          Your cart is empty. <a href="/">Browse the shop</a>.
        </p>
      ) : (
        <>
          <ul class="cart-lines" aria-label="Cart items">
            {cart.data.items.map((line) => {
              const id = `qty-${line.product_id}`;
              return (
                <li key={line.product_id} class="cart-line">
                  <a href={`/products/${line.product_id}`} class="cart-name">
                    {line.name}
                  </a>
                  <span class="price">{money(line.unit_price)} each</span>
                  <form
                    class="qty"
                    onSubmit={(e) => {
                      e.preventDefault();
                      const input = e.currentTarget.elements.namedItem('quantity') as HTMLInputElement;
                      void change(line.product_id, line.name, Number(input.value));
                    }}
                  >
                    <label for={id}>Quantity of {line.name}</label>
                    <input
                      id={id}
                      name="quantity"
                      type="number"
                      min={1}
                      max={99}
                      value={line.quantity}
                      onChange={(e) => void change(line.product_id, line.name, Number(e.currentTarget.value))}
                    />
                    <button type="submit" class="secondary" disabled={busy === line.product_id}>
                      Update
                    </button>
                  </form>
                  <span class="line-total">{money(line.line_total)}</span>
                  <button
                    type="button"
                    class="danger"
                    disabled={busy === line.product_id}
                    onClick={() => void remove(line.product_id, line.name)}
                  >
                    Remove<span class="visually-hidden"> {line.name}</span>
                  </button>
                </li>
              );
            })}
          </ul>
          <p class="cart-total">
            Total: <strong>{money(cart.data.total)}</strong>
          </p>
          <a class="button" href="/checkout">
            Go to checkout
          </a>
        </>
      )}
    </section>
  );
}
