import { useLocation } from 'preact-iso';
import { useEffect, useState } from 'preact/hooks';
import { listProducts, type Product } from '../api';
import { money } from '../format';
import { Alert, Loading, PageTitle, ProductImage, useAsync } from '../ui';
import { AddToCart } from './Product';

const PAGE_SIZE = 12;
const SORTS: Record<string, string> = {
  newest: 'Newest',
  name: 'Name',
  price_asc: 'Price: low to high',
  price_desc: 'Price: high to low',
};

// The API pages forward only (cursors). Which cursor led to which page is remembered here, so that
// "Previous page" works within a visit.
const previous = new Map<string, string>();
const pageNumbers = new Map<string, number>();

let categories: Promise<string[]> | null = null;

/** The catalog's categories, as the products name them (the API has no category list of its own). */
function loadCategories(): Promise<string[]> {
  categories ??= listProducts({ limit: 100, sort: 'name' })
    .then((page) => [...new Set(page.items.map((p) => p.category))].sort())
    .catch((error: unknown) => {
      categories = null;
      throw error;
    });
  return categories;
}

function href(params: Record<string, string | undefined>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value) search.set(key, value);
  const text = search.toString();
  return text ? `/?${text}` : '/';
}

export function ProductCard({ product }: { product: Product }) {
  return (
    <li class="card">
      <a class="card-link" href={`/products/${product.id}`}>
        <ProductImage name={product.name} url={product.image_url} />
        <span class="card-name">{product.name}</span>
      </a>
      <span class="price">{money(product.price)}</span>
      <span class={product.stock > 0 ? 'stock' : 'stock out'}>
        {product.stock > 0 ? `${product.stock} in stock` : 'Out of stock'}
      </span>
      <AddToCart product={product} compact />
    </li>
  );
}

export function Shop() {
  const { query, route } = useLocation();
  const q = query.q ?? '';
  const category = query.category ?? '';
  const sort = SORTS[query.sort ?? ''] ? (query.sort ?? 'newest') : 'newest';
  const cursor = query.cursor ?? '';
  const [text, setText] = useState(q);
  useEffect(() => setText(q), [q]);
  const page = useAsync(
    () => listProducts({ q, category, sort, limit: PAGE_SIZE, cursor: cursor || null }),
    [q, category, sort, cursor],
  );
  const known = useAsync(loadCategories, []);
  const filters = { q: q || undefined, category: category || undefined, sort: sort === 'newest' ? undefined : sort };
  const pageNo = cursor ? pageNumbers.get(cursor) : 1;

  function search(event: Event) {
    event.preventDefault();
    route(href({ ...filters, q: text.trim() || undefined }));
  }

  const categoryName = category ? `${category[0]?.toUpperCase()}${category.slice(1)}` : '';
  const heading = q ? `Results for “${q}”${category ? ` in ${categoryName}` : ''}` : categoryName || 'All products';
  return (
    <section class="shop">
      <PageTitle title={heading}>{heading}</PageTitle>
      <form class="search" role="search" onSubmit={search}>
        <label for="q">Search products</label>
        <input
          id="q"
          type="search"
          name="q"
          value={text}
          maxLength={100}
          onInput={(e) => setText(e.currentTarget.value)}
        />
        <button type="submit">Search</button>
        <label for="sort">Sort by</label>
        <select id="sort" value={sort} onChange={(e) => route(href({ ...filters, sort: e.currentTarget.value }))}>
          {Object.entries(SORTS).map(([value, label]) => (
            <option key={value} value={value}>
              {label}
            </option>
          ))}
        </select>
      </form>
      <nav class="categories" aria-label="Categories">
        <a href={href({ sort: filters.sort })} aria-current={category || q ? undefined : 'page'}>
          All
        </a>
        {(known.data ?? []).map((name) => (
          <a
            key={name}
            href={href({ sort: filters.sort, category: name })}
            aria-current={name === category ? 'page' : undefined}
          >
            {name}
          </a>
        ))}
      </nav>
      <Alert error={page.error} />
      {page.loading && !page.data ? (
        <Loading what="Loading products" />
      ) : page.data && page.data.items.length === 0 ? (
        <p role="status">No products match{q ? ` “${q}”` : ''}.</p>
      ) : (
        <ul class="grid" aria-label="Products" aria-busy={page.loading}>
          {page.data?.items.map((product) => (
            <ProductCard key={product.id} product={product} />
          ))}
        </ul>
      )}
      <nav class="pager" aria-label="Pages">
        {cursor && (
          <a href={href({ ...filters, cursor: previous.get(cursor) || undefined })} rel="prev">
            {previous.has(cursor) ? 'Previous page' : 'First page'}
          </a>
        )}
        {pageNo && <span>Page {pageNo}</span>}
        {page.data?.next_cursor && (
          <a
            href={href({ ...filters, cursor: page.data.next_cursor })}
            rel="next"
            onClick={() => {
              const next = page.data?.next_cursor ?? '';
              previous.set(next, cursor);
              if (pageNo) pageNumbers.set(next, pageNo + 1);
            }}
          >
            Next page
          </a>
        )}
      </nav>
    </section>
  );
}
