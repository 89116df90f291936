import { useLocation } from 'preact-iso';
import { useRef, useState } from 'preact/hooks';
import { login, register } from '../api';
import { Alert, Field, PageTitle } from '../ui';

/** Where to go after logging in: the page that asked, if it is one of ours. */
function nextPage(query: Record<string, string>): string {
  const next = query.next ?? '/';
  return next.startsWith('/') && !next.startsWith('//') ? next : '/';
}

function useSubmit(action: () => Promise<void>) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const alertRef = useRef<HTMLDivElement>(null);
  async function submit(event: Event) {
    event.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      await action();
    } catch (failure) {
      setError(failure);
      requestAnimationFrame(() => alertRef.current?.focus());
    } finally {
      setBusy(false);
    }
  }
  return { busy, error, alertRef, submit };
}

export function Login() {
  const { query, route } = useLocation();
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const form = useSubmit(async () => {
    await login(email.trim(), password);
    route(nextPage(query), true);
  });
  return (
    <section class="narrow">
      <PageTitle title="Log in">Log in</PageTitle>
      <div ref={form.alertRef} tabIndex={-1}>
        <Alert error={form.error} />
      </div>
      <form onSubmit={(e) => void form.submit(e)}>
        <Field id="login-email" label="Email">
          <input
            id="login-email"
            type="email"
            autoComplete="username"
            required
            value={email}
            onInput={(e) => setEmail(e.currentTarget.value)}
          />
        </Field>
        <Field id="login-password" label="Password">
          <input
            id="login-password"
            type="password"
            autoComplete="current-password"
            required
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
          />
        </Field>
        <button type="submit" disabled={form.busy}>
          {form.busy ? 'Logging in…' : 'Log in'}
        </button>
      </form>
      <p>
        New here?{' '}
        <a href={`/register${query.next ? `?next=${encodeURIComponent(query.next)}` : ''}`}>Create an account</a>.
      </p>
    </section>
  );
}

export function Register() {
  const { query, route } = useLocation();
  const [name, setName] = useState('');
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const form = useSubmit(async () => {
    await register(email.trim(), password, name.trim());
    await login(email.trim(), password);
    route(nextPage(query), true);
  });
  return (
    <section class="narrow">
      <PageTitle title="Create an account">Create an account</PageTitle>
      <div ref={form.alertRef} tabIndex={-1}>
        <Alert error={form.error} />
      </div>
      <form onSubmit={(e) => void form.submit(e)}>
        <Field id="register-name" label="Name">
          <input
            id="register-name"
            autoComplete="name"
            required
            maxLength={100}
            value={name}
            onInput={(e) => setName(e.currentTarget.value)}
          />
        </Field>
        <Field id="register-email" label="Email">
          <input
            id="register-email"
            type="email"
            autoComplete="email"
            required
            value={email}
            onInput={(e) => setEmail(e.currentTarget.value)}
          />
        </Field>
        <Field
          id="register-password"
          label="Password"
          hint="10 to 128 characters, mixing letters with digits or symbols."
        >
          <input
            id="register-password"
            type="password"
            autoComplete="new-password"
            required
            minLength={10}
            maxLength={128}
            aria-describedby="register-password-hint"
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
          />
        </Field>
        <button type="submit" disabled={form.busy}>
          {form.busy ? 'Creating your account…' : 'Create account'}
        </button>
      </form>
      <p>
        Already registered? <a href="/login">Log in</a>.
      </p>
    </section>
  );
}
