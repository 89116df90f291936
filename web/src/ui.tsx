import type { ComponentChildren } from 'preact';
import { useLocation } from 'preact-iso';
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { ApiError } from './api';

let navigated = false;

/** Called on every client-side route change: the next page's title takes the focus. */
export function markNavigation(): void {
  navigated = true;
}

/**
 * The page's `<h1>`, which also sets the document title. After a client-side navigation it takes the
 * focus, so a keyboard or screen-reader user lands at the start of the new page rather than on the link
 * they followed (which is gone).
 */
export function PageTitle({ children, title }: { children: ComponentChildren; title: string }) {
  const ref = useRef<HTMLHeadingElement>(null);
  const { url } = useLocation();
  useEffect(() => {
    document.title = `${title} · cloudshop`;
  }, [title]);
  // Also when only the query changes (another page of results, a category): the page is new all the same.
  useEffect(() => {
    if (navigated) {
      navigated = false;
      ref.current?.focus();
    }
  }, [url, title]);
  return (
    <h1 ref={ref} tabIndex={-1} class="page-title">
      {children}
    </h1>
  );
}

export function errorText(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  if (error instanceof TypeError) return 'The shop cannot be reached. Check your connection and try again.';
  return error instanceof Error ? error.message : String(error);
}

/** An error announced at once (role=alert). */
export function Alert({ error, children }: { error?: unknown; children?: ComponentChildren }) {
  if (!error && !children) return null;
  return (
    <div class="alert" role="alert">
      {children ?? errorText(error)}
    </div>
  );
}

/** A success or progress message, announced politely. */
export function Notice({ children }: { children?: ComponentChildren }) {
  return (
    <div class={children ? 'notice' : 'notice empty'} role="status" aria-live="polite">
      {children}
    </div>
  );
}

export function Loading({ what = 'Loading' }: { what?: string }) {
  return (
    <p class="loading" role="status" aria-live="polite">
      {what}…
    </p>
  );
}

export interface Async<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => void;
  setData: (data: T) => void;
}

/** Load once per change of `deps`; `reload` loads again. Answers of a superseded load are dropped. */
export function useAsync<T>(load: () => Promise<T>, deps: unknown[]): Async<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const [loading, setLoading] = useState(true);
  const [round, setRound] = useState(0);
  useEffect(() => {
    let current = true;
    setLoading(true);
    load()
      .then((value) => {
        if (!current) return;
        setData(value);
        setError(undefined);
      })
      .catch((failure: unknown) => {
        if (current) setError(failure);
      })
      .finally(() => {
        if (current) setLoading(false);
      });
    return () => {
      current = false;
    };
  }, [...deps, round]);
  const reload = useCallback(() => setRound((r) => r + 1), []);
  return { data, error, loading, reload, setData };
}

/** Call `tick` every `ms` while the page is visible (live order status); stops on unmount. */
export function usePolling(tick: () => void, ms: number, active = true): void {
  const saved = useRef(tick);
  saved.current = tick;
  useEffect(() => {
    if (!active) return undefined;
    const timer = setInterval(() => {
      if (document.visibilityState === 'visible') saved.current();
    }, ms);
    return () => clearInterval(timer);
  }, [ms, active]);
}

export function ProductImage({ name, url, size = 'small' }: { name: string; url: string | null; size?: string }) {
  const [broken, setBroken] = useState(false);
  if (url && !broken) {
    return (
      <img
        class={`product-image ${size}`}
        src={url}
        alt={name}
        loading="lazy"
        decoding="async"
        width={size === 'large' ? 480 : 240}
        height={size === 'large' ? 480 : 240}
        onError={() => setBroken(true)}
      />
    );
  }
  return (
    <div class={`product-image placeholder ${size}`} role="img" aria-label={`No photo of ${name} yet`}>
      <span aria-hidden="true">{name.slice(0, 1).toUpperCase()}</span>
    </div>
  );
}

export function Field({
  label,
  hint,
  children,
  id,
}: {
  label: string;
  hint?: string;
  id: string;
  children: ComponentChildren;
}) {
  return (
    <div class="field">
      <label for={id}>{label}</label>
      {children}
      {hint && (
        <small id={`${id}-hint`} class="hint">
          {hint}
        </small>
      )}
    </div>
  );
}
