import { useLocation, useRoute } from 'preact-iso';
import { useState } from 'preact/hooks';
import { getCart, getProduct, type Product, setQuantity } from '../api';
import { money } from '../format';
import { session } from '../session';
import { useStore } from '../store';
import { Alert, errorText, Loading, PageTitle, ProductImage, useAsync } from '../ui';

const MAX_QUANTITY = 99;

/** Add `quantity` of a product to the cart (the API sets a line's quantity, so add to what is there). */
async function addToCart(product: Product, quantity: number): Promise<number> {
  const cart = await getCart();
  const inCart = cart.items.find((line) => line.product_id === product.id)?.quantity ?? 0;
  const total = Math.min(MAX_QUANTITY, inCart + quantity);
  await setQuantity(product.id, total);
  return total;
}

export function AddToCart({ product, compact = false }: { product: Product; compact?: boolean }) {
  const user = useStore(session);
  const { url } = useLocation();
  const [quantity, setQty] = useState(1);
  const [busy, setBusy] = useState(false);
  const [message, setMessage] = useState('');
  const [error, setError] = useState<unknown>(undefined);
  if (!user) {
    return (
      <a class="button secondary" href={`/login?next=${encodeURIComponent(url)}`}>
        Log in to buy
      </a>
    );
  }
  if (product.stock <= 0) return null;

  async function add(event: Event) {
    event.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      const total = await addToCart(product, quantity);
      setMessage(`Added. ${total} in your cart.`);
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  }

  const id = `qty-${product.id}`;
  return (
    <form class={compact ? 'add compact' : 'add'} onSubmit={(e) => void add(e)}>
      {!compact && (
        <>
          <label for={id}>Quantity</label>
          <input
            id={id}
            type="number"
            min={1}
            max={Math.min(MAX_QUANTITY, product.stock)}
            value={quantity}
            onInput={(e) => setQty(Math.max(1, Number(e.currentTarget.value) || 1))}
          />
        </>
      )}
      <button type="submit" disabled={busy} aria-label={compact ? `Add ${product.name} to cart` : undefined}>
        {busy ? 'Adding…' : 'Add to cart'}
      </button>
      <span class="added" role="status" aria-live="polite">
        {message}
      </span>
      {error !== undefined && (
        <span class="inline-error" role="alert">
          {errorText(error)}
        </span>
      )}
    </form>
  );
}

export function ProductPage() {
  const { params } = useRoute();
  const id = params.id ?? '';
  const product = useAsync(() => getProduct(id), [id]);
  if (product.error) {
    return (
      <section>
        <PageTitle title="Product not found">Product not found</PageTitle>
        <Alert error={product.error} />
        <p>
          <a href="/">Back to the shop</a>
        </p>
      </section>
    );
  }
  if (!product.data) return <Loading what="Loading the product" />;
  const p = product.data;
  return (
    <article class="product">
      <nav aria-label="Breadcrumb" class="breadcrumb">
        <a href="/">Shop</a> / <a href={`/?category=${encodeURIComponent(p.category)}`}>{p.category}</a>
      </nav>
      <div class="product-layout">
        <ProductImage name={p.name} url={p.image_url} size="large" />
        <div>
          <PageTitle title={p.name}>{p.name}</PageTitle>
          <p class="price large">{money(p.price)}</p>
          <p class={p.stock > 0 ? 'stock' : 'stock out'}>{p.stock > 0 ? `${p.stock} in stock` : 'Out of stock'}</p>
          <p class="description">{p.description}</p>
          <AddToCart product={p} />
        </div>
      </div>
    </article>
  );
}
