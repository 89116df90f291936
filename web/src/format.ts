import type { Money, OrderStatus } from './api';

const formatters = new Map<string, Intl.NumberFormat>();

/** Minor units to a price as people read it: `{amount: 129900, currency: 'INR'}` -> `₹1,299.00`. */
export function money(value: Money | null | undefined): string {
  if (!value) return '—';
  let formatter = formatters.get(value.currency);
  if (!formatter) {
    formatter = new Intl.NumberFormat('en-IN', { style: 'currency', currency: value.currency });
    formatters.set(value.currency, formatter);
  }
  const digits = formatter.resolvedOptions().maximumFractionDigits ?? 2;
  return formatter.format(value.amount / 10 ** digits);
}

/** Rounded to whole units, for chart axes: `₹5,397`. */
export function wholeMoney(amount: number, currency: string): string {
  return new Intl.NumberFormat('en-IN', { style: 'currency', currency, maximumFractionDigits: 0 }).format(amount / 100);
}

/** A decimal price typed by an admin (`1299.5`) in minor units (`129950`); null if it is not one. */
export function toMinorUnits(text: string): number | null {
  const match = /^\s*(\d{1,9})(?:[.,](\d{1,2}))?\s*$/.exec(text);
  if (!match) return null;
  return Number(match[1]) * 100 + Number((match[2] ?? '').padEnd(2, '0'));
}

export function fromMinorUnits(amount: number): string {
  return (amount / 100).toFixed(2);
}

export function dateTime(iso: string): string {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString('en-GB', { dateStyle: 'medium', timeStyle: 'short' });
}

export function time(iso: string): string {
  const date = new Date(iso);
  return Number.isNaN(date.getTime())
    ? iso
    : date.toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit', timeZone: 'UTC' });
}

export const STATUS_LABELS: Record<OrderStatus, string> = {
  PENDING_PAYMENT: 'Awaiting payment',
  PAID: 'Paid',
  FULFILLED: 'Shipped',
  CANCELLING: 'Cancelling',
  CANCELLED: 'Cancelled',
  PAYMENT_FAILED: 'Payment failed',
  REFUNDED: 'Refunded',
};

/** The decline reasons of the payment provider, as a buyer should read them. */
export const DECLINE_MESSAGES: Record<string, string> = {
  card_declined: 'Your card was declined by the bank. Nothing was charged; try another payment method.',
  insufficient_funds: 'The card has insufficient funds. Nothing was charged; try another payment method.',
  provider_error:
    'The payment provider could not process the payment right now. Nothing was charged; please try again.',
};

export function declineMessage(reason: string | null): string {
  return (
    DECLINE_MESSAGES[reason ?? ''] ??
    `The payment did not go through (${reason ?? 'no reason given'}). Nothing was charged; try again.`
  );
}

/** The simulated provider's test tokens: the storefront never sees a card number. */
export const TEST_PAYMENT_METHODS: { token: string; label: string }[] = [
  { token: 'pm_card_ok', label: 'Test card: approved' },
  { token: 'pm_card_declined', label: 'Test card: declined' },
  { token: 'pm_card_insufficient_funds', label: 'Test card: insufficient funds' },
  { token: 'pm_card_error', label: 'Test card: the provider fails' },
  { token: 'pm_card_slow', label: 'Test card: approved after a delay' },
];
