import { useEffect, useRef, useState } from 'preact/hooks';
import {
  createProduct,
  deleteProduct,
  getProduct,
  listProducts,
  patchProduct,
  type Product,
  type ProductPatch,
  uploadProductImage,
} from '../api';
import { fromMinorUnits, money, toMinorUnits } from '../format';
import { Alert, Field, Loading, Notice, ProductImage, useAsync } from '../ui';

const IMAGE_TYPES = 'image/jpeg,image/png,image/webp';
const CURRENCY = 'INR';

interface Draft {
  name: string;
  description: string;
  category: string;
  price: string;
  stock: string;
  adjustment: string;
}

function draftOf(product: Product | null): Draft {
  return {
    name: product?.name ?? '',
    description: product?.description ?? '',
    category: product?.category ?? '',
    price: product ? fromMinorUnits(product.price.amount) : '',
    stock: product ? String(product.stock) : '0',
    adjustment: '',
  };
}

/** Create a product (product = null) or edit one: details, price, a stock adjustment, its image. */
function ProductForm({
  product,
  onSaved,
  onClose,
}: {
  product: Product | null;
  onSaved: (product: Product, message: string) => void;
  onClose: () => void;
}) {
  const [draft, setDraft] = useState<Draft>(draftOf(product));
  const [file, setFile] = useState<File | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const heading = useRef<HTMLHeadingElement>(null);
  useEffect(() => heading.current?.focus(), [product?.id]);
  const set = (key: keyof Draft) => (e: { currentTarget: HTMLInputElement | HTMLTextAreaElement }) =>
    setDraft({ ...draft, [key]: e.currentTarget.value });
  const prefix = product ? `edit-${product.id}` : 'new';

  async function save(event: Event) {
    event.preventDefault();
    const amount = toMinorUnits(draft.price);
    if (amount === null || amount < 1) {
      setError(new Error('The price is a positive amount with at most two decimals, e.g. 1499.00.'));
      return;
    }
    setBusy(true);
    setError(undefined);
    try {
      let saved: Product;
      const price = { amount, currency: product?.price.currency ?? CURRENCY };
      if (product) {
        const patch: ProductPatch = {
          name: draft.name.trim(),
          description: draft.description,
          category: draft.category.trim(),
          price,
        };
        const adjustment = Number(draft.adjustment || 0);
        if (!Number.isInteger(adjustment)) throw new Error('The stock adjustment is a whole number, e.g. 20 or -3.');
        if (adjustment) patch.stock_adjustment = adjustment;
        saved = await patchProduct(product.id, patch);
      } else {
        const stock = Number(draft.stock);
        if (!Number.isInteger(stock) || stock < 0) throw new Error('The stock is a whole number, 0 or more.');
        saved = await createProduct({
          name: draft.name.trim(),
          description: draft.description,
          category: draft.category.trim(),
          price,
          stock,
        });
      }
      if (file) {
        await uploadProductImage(saved.id, file);
        saved = await getProduct(saved.id);
      }
      onSaved(saved, `${saved.name} ${product ? 'saved' : 'created'}${file ? ' with its image' : ''}.`);
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  }

  return (
    <form class="panel product-form" onSubmit={(e) => void save(e)} aria-labelledby={`${prefix}-title`}>
      <h2 id={`${prefix}-title`} ref={heading} tabIndex={-1}>
        {product ? `Edit ${product.name}` : 'New product'}
      </h2>
      <Alert error={error} />
      <Field id={`${prefix}-name`} label="Name">
        <input id={`${prefix}-name`} required maxLength={200} value={draft.name} onInput={set('name')} />
      </Field>
      <Field id={`${prefix}-description`} label="Description">
        <textarea
          id={`${prefix}-description`}
          maxLength={2000}
          rows={3}
          value={draft.description}
          onInput={set('description')}
        />
      </Field>
      <Field id={`${prefix}-category`} label="Category" hint="Lower case letters, digits and dashes, e.g. home">
        <input
          id={`${prefix}-category`}
          required
          pattern="[a-z0-9][a-z0-9\-]{0,39}"
          aria-describedby={`${prefix}-category-hint`}
          value={draft.category}
          onInput={set('category')}
        />
      </Field>
      <Field id={`${prefix}-price`} label={`Price (${product?.price.currency ?? CURRENCY})`} hint="e.g. 1499.00">
        <input
          id={`${prefix}-price`}
          required
          inputMode="decimal"
          aria-describedby={`${prefix}-price-hint`}
          value={draft.price}
          onInput={set('price')}
        />
      </Field>
      {product ? (
        <Field
          id={`${prefix}-adjustment`}
          label={`Adjust stock (now ${product.stock})`}
          hint="+20 restocks, -3 writes off; leave empty to keep it"
        >
          <input
            id={`${prefix}-adjustment`}
            type="number"
            step={1}
            aria-describedby={`${prefix}-adjustment-hint`}
            value={draft.adjustment}
            onInput={set('adjustment')}
          />
        </Field>
      ) : (
        <Field id={`${prefix}-stock`} label="Stock">
          <input
            id={`${prefix}-stock`}
            type="number"
            min={0}
            step={1}
            required
            value={draft.stock}
            onInput={set('stock')}
          />
        </Field>
      )}
      <Field id={`${prefix}-image`} label="Image" hint="JPEG, PNG or WebP, up to 5 MB; uploaded straight to storage">
        <input
          id={`${prefix}-image`}
          type="file"
          accept={IMAGE_TYPES}
          aria-describedby={`${prefix}-image-hint`}
          onChange={(e) => setFile(e.currentTarget.files?.[0] ?? null)}
        />
      </Field>
      <div class="actions">
        <button type="submit" disabled={busy}>
          {busy ? 'Saving…' : product ? 'Save changes' : 'Create product'}
        </button>
        <button type="button" class="secondary" onClick={onClose}>
          Close
        </button>
      </div>
    </form>
  );
}

export function AdminProducts() {
  const [q, setQ] = useState('');
  const [search, setSearch] = useState('');
  const [cursor, setCursor] = useState<string | null>(null);
  const page = useAsync(() => listProducts({ q: search, limit: 20, cursor }), [search, cursor]);
  const [editing, setEditing] = useState<Product | null | 'new'>(null);
  const [notice, setNotice] = useState('');
  const [error, setError] = useState<unknown>(undefined);

  async function remove(product: Product) {
    if (!confirm(`Remove ${product.name} from the catalog?`)) return;
    try {
      await deleteProduct(product.id);
      setNotice(`${product.name} removed from the catalog.`);
      page.reload();
    } catch (failure) {
      setError(failure);
    }
  }

  return (
    <div>
      <Notice>{notice}</Notice>
      <Alert error={error ?? page.error} />
      <div class="toolbar">
        <form
          role="search"
          onSubmit={(e) => {
            e.preventDefault();
            setCursor(null);
            setSearch(q.trim());
          }}
        >
          <label for="admin-q">Find products</label>
          <input id="admin-q" type="search" value={q} onInput={(e) => setQ(e.currentTarget.value)} />
          <button type="submit" class="secondary">
            Find
          </button>
        </form>
        <button type="button" onClick={() => setEditing('new')}>
          New product
        </button>
      </div>
      {editing !== null && (
        <ProductForm
          // A new form per saved version: the draft, the stock adjustment and the chosen file start afresh.
          key={editing === 'new' ? 'new' : `${editing.id}@${editing.updated_at}`}
          product={editing === 'new' ? null : editing}
          onClose={() => setEditing(null)}
          onSaved={(product, message) => {
            setNotice(message);
            setEditing(product);
            page.reload();
          }}
        />
      )}
      {!page.data ? (
        page.loading && <Loading what="Loading products" />
      ) : (
        <table class="admin-products">
          <caption class="visually-hidden">Catalog products</caption>
          <thead>
            <tr>
              <th scope="col">Image</th>
              <th scope="col">Name</th>
              <th scope="col">Category</th>
              <th scope="col" class="num">
                Price
              </th>
              <th scope="col" class="num">
                Stock
              </th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {page.data.items.map((product) => (
              <tr key={product.id}>
                <td>
                  <ProductImage name={product.name} url={product.image_url} size="thumb" />
                </td>
                <th scope="row">
                  <a href={`/products/${product.id}`}>{product.name}</a>
                </th>
                <td>{product.category}</td>
                <td class="num">{money(product.price)}</td>
                <td class="num">{product.stock}</td>
                <td class="actions">
                  <button type="button" class="secondary" onClick={() => setEditing(product)}>
                    Edit<span class="visually-hidden"> {product.name}</span>
                  </button>
                  <button type="button" class="danger" onClick={() => void remove(product)}>
                    Remove<span class="visually-hidden"> {product.name}</span>
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <nav class="pager" aria-label="Pages">
        {cursor && (
          <button type="button" class="secondary" onClick={() => setCursor(null)}>
            First page
          </button>
        )}
        {page.data?.next_cursor && (
          <button type="button" class="secondary" onClick={() => setCursor(page.data?.next_cursor ?? null)}>
            Next page
          </button>
        )}
      </nav>
    </div>
  );
}
