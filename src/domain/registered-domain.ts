/**
 * The registered domain (eTLD+1) of a hostname, as Let's Encrypt computes it for the "New
 * Certificates per Registered Domain" limit. Pure.
 *
 * Let's Encrypt's Boulder keys that limit with `publicsuffix.Domain(name)` from
 * weppos/publicsuffix-go (letsencrypt/boulder `ratelimits/utilities.go`, FQDNsToETLDsPlusOne),
 * whose DefaultFindOptions are `{IgnorePrivate: false, DefaultRule: "*"}`: the PRIVATE section of
 * the Public Suffix List counts too (that is why hosting providers add themselves to the PSL),
 * and an unknown TLD is one label. So tldts runs with `allowPrivateDomains: true`:
 * `a.github.io` → `a.github.io`, `a.example.co.uk` → `example.co.uk`, `x.y.test` → `y.test`.
 * When the name is itself a public suffix (or has a single label) tldts returns null and, as
 * Boulder does, the name itself is the key.
 */
import { getDomain } from 'tldts';
import { canonicalHostname } from './hostname.js';

export function registeredDomain(hostname: string): string {
  const name = canonicalHostname(hostname);
  return getDomain(name, { allowPrivateDomains: true, extractHostname: false }) ?? name;
}
