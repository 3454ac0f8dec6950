/**
 * Which scope a CA's `rateLimited` problem names, read from its detail text, so the service
 * pauses exactly that scope: the account, a registered domain, an exact set of names, or one
 * name. Pure.
 *
 * Let's Encrypt's details name the limit, e.g.
 *   "too many new orders (300) from this account in the last 3h0m0s, retry after …"
 *   "too many certificates (50) already issued for \"example.com\" in the last 168h0m0s, …"
 *   "too many failed authorizations (5) for \"www.example.com\" in the last 1h0m0s, …"
 *   "too many certificates (5) already issued for this exact set of identifiers in the last …"
 *   "too many certificates already issued for exact set of domains: www.example.com" (older wording)
 * The exact-set limit pauses the order's own set of names (domain/budget.ts exactSetKey): another
 * certificate that shares a name is not limited by it. A detail we cannot read pauses the account:
 * waiting too broadly costs time, ordering into a limit costs the CA's patience.
 */
import { DEFAULT_ACCOUNT_BUDGET_KEY, exactSetKey } from './budget.js';
import { registeredDomain } from './registered-domain.js';

export type PauseScope = 'account' | 'registered-domain' | 'exact-set' | 'name';

export interface RateLimitPause {
  scope: PauseScope;
  key: string;
}

export function rateLimitScope(detail: string, hostnames: readonly string[]): RateLimitPause {
  const text = detail.toLowerCase();
  const quoted = /"([^"]+)"/.exec(text)?.[1];
  const first = hostnames[0] ?? '';
  if (/exact set|same set/.test(text) && hostnames.length > 0) {
    return { scope: 'exact-set', key: exactSetKey(hostnames) };
  }
  if (/failed authorizations?|identifiers? .*per name|for this name/.test(text)) {
    return { scope: 'name', key: quoted && hostnames.includes(quoted) ? quoted : first };
  }
  if (/certificates? .*(issued|per) .*(domain|for ")/.test(text) || /registered domain/.test(text)) {
    return { scope: 'registered-domain', key: quoted ?? registeredDomain(first) };
  }
  return { scope: 'account', key: DEFAULT_ACCOUNT_BUDGET_KEY };
}

/** The ledger key under which a pause is kept (its one event is the time the pause ends). */
export function pauseLedgerKey(pause: RateLimitPause): string {
  return `paused/${pause.scope}/${pause.key}`;
}

/**
 * The pauses that stop an order for `hostnames`: the account, each registered domain, the exact
 * set of names, each name.
 */
export function pausesFor(hostnames: readonly string[]): RateLimitPause[] {
  const domains = [...new Set(hostnames.map(registeredDomain))];
  return [
    { scope: 'account', key: DEFAULT_ACCOUNT_BUDGET_KEY },
    ...domains.map((key): RateLimitPause => ({ scope: 'registered-domain', key })),
    ...(hostnames.length > 0 ? [{ scope: 'exact-set', key: exactSetKey(hostnames) } satisfies RateLimitPause] : []),
    ...hostnames.map((key): RateLimitPause => ({ scope: 'name', key })),
  ];
}
