/**
 * Preflight over real DNS and HTTP: before an order, check what the CA's HTTP-01 validation would
 * see, so a name that cannot pass does not spend a failed authorization (5 per name per hour).
 *
 * 1. Resolve A and AAAA with node:dns/promises `Resolver` (c-ares: the given servers, or the
 *    system's resolv.conf servers; like the CA, it does not read /etc/hosts). No address → NoDNS
 *    with the DNS error codes.
 * 2. When CA identities are configured: look up CAA (`Resolver.resolveCaa`, same servers) at the
 *    name and at each parent up to its top-level label, all at once, and let src/domain/caa.ts
 *    decide (RFC 8659: the first node with records is the relevant set; a failed lookup before it
 *    refuses). NODATA (`ENODATA`) and NXDOMAIN (`ENOTFOUND`) are "no records"; any other error
 *    (`ESERVFAIL`, `ETIMEOUT`, `EREFUSED`, ...) is a failed lookup. A refusal → CAA with a detail
 *    naming the records and the identity. The lookups run beside step 1; their verdict counts
 *    only once the name resolves. Aliases are the resolver's business: it answers a CAA query for
 *    a CNAME with the target's records, as RFC 8659 asks.
 * 3. Open a TCP connection to the resolved address (and close it): an address that refuses
 *    connections fails here, before anything is written to the shared challenge store. Only then
 *    put a random base64url probe token with a random value into the challenge store, GET
 *    `http://<hostname>:<httpPort>/.well-known/acme-challenge/<probe>` from the resolved address
 *    with the Host header naming the hostname, and expect exactly that value back (trailing
 *    whitespace trimmed, as the CA does). Anything else (a 404 from another app, a redirect, a
 *    refused connection, a timeout) → NotRouted with a detail naming what came back. A 404 is asked
 *    once more after PROBE_NOT_FOUND_RETRY_MS, since the probe may have reached another instance
 *    before the token reached that instance's copy of the challenge store. IPv6 is tried
 *    first and IPv4 only when IPv6 fails to connect, as Let's Encrypt does. Redirects are not
 *    followed (the issuer's own Fabio route serves the challenge path directly).
 * 4. Delete the probe token, if one was put, whatever happened.
 */
import { randomBytes } from 'node:crypto';
import { Resolver } from 'node:dns/promises';
import { request } from 'node:http';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { caaLookupNodes, decideCaa, type CaaLookup, type CaaRecord } from '../../domain/caa.js';
import { ACME_CHALLENGE_PATH } from '../../domain/challenge.js';
import { AbortedError } from '../../errors.js';
import { F, silentLogger, type Logger } from '../../logging.js';
import type { ChallengeStore } from '../../ports/challenge-store.js';
import type { Preflight, PreflightResult } from '../../ports/preflight.js';

export const DEFAULT_PREFLIGHT_HTTP_PORT = 80;
export const DEFAULT_PREFLIGHT_TIMEOUT_MS = 5_000;
/** Most body bytes read from an answer; a key authorization is under 100. */
const MAX_BODY_BYTES = 4_096;
const SHOWN_BODY_CHARS = 80;

export interface HttpPreflightOptions {
  challengeStore: ChallengeStore;
  /** DNS servers as `host:port` (`[v6]:port` for IPv6); empty or unset: the system's servers. */
  dnsServers?: string[];
  httpPort?: number;
  /** Budget of each step: the DNS lookups, then each HTTP attempt. */
  timeoutMs?: number;
  /**
   * The CA's issuer domain names for CAA (e.g. `letsencrypt.org`, see src/domain/caa.ts
   * defaultCaaIdentities); empty or unset: no CAA check.
   */
  caaIdentities?: readonly string[];
  logger?: Logger;
}

/** Resolver codes that mean "no CAA records here": NODATA and NXDOMAIN. */
const NO_RECORDS_CODES = new Set(['ENODATA', 'ENOTFOUND']);

type Attempt =
  { kind: 'ok' } | { kind: 'connect-failed'; detail: string } | { kind: 'wrong'; detail: string; status?: number };
type FailedAttempt = Exclude<Attempt, { kind: 'ok' }>;

/**
 * A probe answered 404 is asked once more after this long: the request may have reached another
 * instance before the probe token reached that instance's copy of the challenge store (it gets
 * there within about a second, adapters/consul/consul-challenge-store.ts).
 */
export const PROBE_NOT_FOUND_RETRY_MS = 1_000;

function errorCode(err: unknown): string {
  if (typeof err === 'object' && err !== null && typeof (err as { code?: unknown }).code === 'string') {
    return (err as { code: string }).code;
  }
  return err instanceof Error ? err.message : String(err);
}

function shownBody(body: string): string {
  const trimmed = body.trim();
  if (trimmed === '') return 'an empty body';
  return JSON.stringify(trimmed.length > SHOWN_BODY_CHARS ? `${trimmed.slice(0, SHOWN_BODY_CHARS)}…` : trimmed);
}

/** Connection-level failures, after which the other address family is worth a try. */
const CONNECT_ERRORS = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
  'ECONNRESET',
  'EAFNOSUPPORT',
]);

export class HttpPreflight implements Preflight {
  private readonly store: ChallengeStore;
  private readonly dnsServers: string[];
  private readonly httpPort: number;
  private readonly timeoutMs: number;
  private readonly caaIdentities: readonly string[];
  /**
   * One resolver for every lookup: a Resolver is a c-ares channel with native state of its own,
   * released only when the garbage collector gets to its object, and one channel serves any number
   * of lookups at once. (A channel per check made 10,000 of them at start-up.)
   */
  private readonly resolver: Resolver;
  private readonly log: Logger;

  constructor(opts: HttpPreflightOptions) {
    this.store = opts.challengeStore;
    this.dnsServers = opts.dnsServers ?? [];
    this.httpPort = opts.httpPort ?? DEFAULT_PREFLIGHT_HTTP_PORT;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_PREFLIGHT_TIMEOUT_MS;
    this.caaIdentities = [...(opts.caaIdentities ?? [])];
    this.resolver = new Resolver({ timeout: this.timeoutMs, tries: 2 });
    if (this.dnsServers.length > 0) this.resolver.setServers(this.dnsServers);
    this.log = (opts.logger ?? silentLogger()).child({ [F.component]: 'http-preflight' });
  }

  async check(hostname: string, signal?: AbortSignal): Promise<PreflightResult> {
    const what = `preflight ${hostname}`;
    if (signal?.aborted) throw new AbortedError(what, { cause: signal.reason });
    const [resolved, caa] = await Promise.all([
      this.resolve(hostname, signal),
      this.caaIdentities.length > 0 ? this.lookupCaa(hostname, signal) : undefined,
    ]);
    if (signal?.aborted) throw new AbortedError(what, { cause: signal.reason });
    if (!resolved.ok) return { ok: false, reason: 'NoDNS', detail: resolved.detail };
    if (caa !== undefined) {
      const verdict = decideCaa(hostname, caa, { identities: this.caaIdentities });
      if (!verdict.allowed) {
        this.log.debug({ [F.hostname]: hostname, [F.reason]: verdict.reason }, 'preflight: CAA does not allow the CA');
        return { ok: false, reason: 'CAA', detail: verdict.detail };
      }
    }

    const candidates = [resolved.v6[0], resolved.v4[0]].filter((a): a is string => a !== undefined);
    const failures: string[] = [];
    let probe: { token: string; value: string } | undefined;
    try {
      for (const [i, address] of candidates.entries()) {
        // Connect first: an address that refuses connections costs no probe token in the shared store.
        let attempt: FailedAttempt | undefined = await this.reach(hostname, address, signal);
        if (signal?.aborted) throw new AbortedError(what, { cause: signal.reason });
        if (attempt === undefined) {
          if (probe === undefined) {
            probe = { token: randomBytes(24).toString('base64url'), value: randomBytes(24).toString('base64url') };
            await this.store.put(probe.token, probe.value);
          }
          let fetched = await this.fetchProbe(hostname, address, probe.token, probe.value, signal);
          if (fetched.kind === 'wrong' && fetched.status === 404) {
            await sleep(PROBE_NOT_FOUND_RETRY_MS, undefined, signal ? { signal } : undefined).catch(() => undefined);
            if (signal?.aborted) throw new AbortedError(what, { cause: signal.reason });
            fetched = await this.fetchProbe(hostname, address, probe.token, probe.value, signal);
          }
          if (signal?.aborted) throw new AbortedError(what, { cause: signal.reason });
          if (fetched.kind === 'ok') return { ok: true };
          attempt = fetched;
        }
        failures.push(attempt.detail);
        if (attempt.kind === 'wrong' || i === candidates.length - 1) break;
      }
      return { ok: false, reason: 'NotRouted', detail: failures.join('; ') };
    } finally {
      if (probe !== undefined) {
        try {
          await this.store.delete(probe.token);
        } catch (err) {
          this.log.warn({ [F.hostname]: hostname, [F.err]: errorCode(err) }, 'preflight probe token not deleted');
        }
      }
    }
  }

  /**
   * Whether a TCP connection to `address` opens (it is closed at once): undefined when it does,
   * otherwise the failed attempt, worded as fetchProbe words it. Never rejects; an abort ends it
   * with undefined (the caller looks at the signal).
   */
  private reach(
    hostname: string,
    address: string,
    signal: AbortSignal | undefined,
  ): Promise<FailedAttempt | undefined> {
    return new Promise<FailedAttempt | undefined>((resolve) => {
      let settled = false;
      const socket = connect({ host: address, port: this.httpPort });
      const finish = (attempt: FailedAttempt | undefined): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        socket.destroy();
        resolve(attempt);
      };
      const onAbort = (): void => finish(undefined);
      const timer = setTimeout(() => finish(this.noAnswer(hostname, address)), this.timeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      socket.once('connect', () => finish(undefined));
      socket.once('error', (err) => finish(this.connectionFailure(hostname, address, errorCode(err))));
    });
  }

  /** A probe of `hostname` at `address` that got no answer within the timeout. */
  private noAnswer(hostname: string, address: string): FailedAttempt {
    const { shownUrl, via } = this.describe(hostname, address);
    return { kind: 'wrong', detail: `${shownUrl} via ${via}: no answer within ${this.timeoutMs} ms` };
  }

  /**
   * A probe of `hostname` at `address` that failed with socket error `code`: a connection-level
   * failure (worth trying the other address family) or another failure of the request.
   */
  private connectionFailure(hostname: string, address: string, code: string): FailedAttempt {
    const { shownUrl, via } = this.describe(hostname, address);
    return CONNECT_ERRORS.has(code)
      ? { kind: 'connect-failed', detail: `${shownUrl}: connecting to ${via} failed (${code})` }
      : { kind: 'wrong', detail: `${shownUrl} via ${via}: request failed (${code})` };
  }

  /** How a probe of `hostname` at `address` is named in a detail. */
  private describe(hostname: string, address: string): { shownUrl: string; via: string } {
    return {
      shownUrl: `http://${hostname}${this.httpPort === 80 ? '' : `:${this.httpPort}`}${ACME_CHALLENGE_PATH}<probe>`,
      via: address.includes(':') ? `[${address}]:${this.httpPort}` : `${address}:${this.httpPort}`,
    };
  }

  /**
   * Runs `lookups` on the shared resolver; when `signal` aborts, stops waiting for them at once
   * (rejecting with an AbortedError). The lookups themselves are left to end by their timeout:
   * cancelling the resolver would cancel every other check's lookups too.
   */
  private withResolver<T>(signal: AbortSignal | undefined, lookups: (resolver: Resolver) => Promise<T>): Promise<T> {
    if (signal === undefined) return lookups(this.resolver);
    return new Promise<T>((resolve, reject) => {
      const onAbort = (): void => reject(new AbortedError('preflight lookup', { cause: signal.reason }));
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      lookups(this.resolver)
        .then(resolve, reject)
        .finally(() => signal.removeEventListener('abort', onAbort));
    });
  }

  /** The CAA lookups of `hostname` and each parent, in caaLookupNodes order; never rejects. */
  private lookupCaa(hostname: string, signal: AbortSignal | undefined): Promise<CaaLookup[]> {
    return this.withResolver(signal, (resolver) =>
      Promise.all(
        caaLookupNodes(hostname).map(async (node): Promise<CaaLookup> => {
          try {
            const answers = await resolver.resolveCaa(node);
            const records = answers.flatMap((answer): CaaRecord[] =>
              Object.entries(answer)
                .filter(([tag, value]) => tag !== 'critical' && typeof value === 'string')
                .map(([tag, value]) => ({ flags: answer.critical, tag, value: value as string })),
            );
            return records.length > 0 ? { node, kind: 'records', records } : { node, kind: 'none' };
          } catch (err) {
            const code = errorCode(err);
            return NO_RECORDS_CODES.has(code) ? { node, kind: 'none' } : { node, kind: 'failed', error: code };
          }
        }),
      ),
    );
  }

  private resolve(
    hostname: string,
    signal: AbortSignal | undefined,
  ): Promise<{ ok: true; v4: string[]; v6: string[] } | { ok: false; detail: string }> {
    return this.withResolver(signal, async (resolver) => {
      const [v4, v6] = await Promise.allSettled([resolver.resolve4(hostname), resolver.resolve6(hostname)]);
      const a = v4.status === 'fulfilled' ? v4.value : [];
      const aaaa = v6.status === 'fulfilled' ? v6.value : [];
      if (a.length > 0 || aaaa.length > 0) return { ok: true, v4: a, v6: aaaa };
      const code = (r: PromiseSettledResult<string[]>): string =>
        r.status === 'rejected' ? errorCode(r.reason) : 'no records';
      return { ok: false, detail: `${hostname} has no A or AAAA record (A: ${code(v4)}, AAAA: ${code(v6)})` };
    });
  }

  /** One GET of the probe from `address`; never rejects. */
  private fetchProbe(
    hostname: string,
    address: string,
    token: string,
    value: string,
    signal: AbortSignal | undefined,
  ): Promise<Attempt> {
    const { shownUrl, via } = this.describe(hostname, address);
    const signals = [AbortSignal.timeout(this.timeoutMs), ...(signal ? [signal] : [])];
    const combined = AbortSignal.any(signals);
    return new Promise<Attempt>((resolve) => {
      let settled = false;
      const done = (attempt: Attempt): void => {
        if (settled) return;
        settled = true;
        resolve(attempt);
      };
      const req = request(
        {
          host: address,
          port: this.httpPort,
          path: `${ACME_CHALLENGE_PATH}${token}`,
          method: 'GET',
          agent: false,
          headers: {
            host: this.httpPort === 80 ? hostname : `${hostname}:${this.httpPort}`,
            'user-agent': 'consul-acme-preflight',
            accept: '*/*',
          },
          signal: combined,
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (chunk: Buffer) => {
            if (size >= MAX_BODY_BYTES) return;
            chunks.push(chunk);
            size += chunk.length;
          });
          res.on('error', (err) =>
            done({ kind: 'wrong', detail: `${shownUrl} via ${via}: answer broke off (${errorCode(err)})` }),
          );
          res.on('close', () => done({ kind: 'wrong', detail: `${shownUrl} via ${via}: answer broke off` }));
          res.on('end', () => {
            const body = Buffer.concat(chunks).toString('utf8').slice(0, MAX_BODY_BYTES);
            const status = res.statusCode ?? 0;
            if (status === 200 && body.trimEnd() === value) {
              done({ kind: 'ok' });
              return;
            }
            const location = typeof res.headers.location === 'string' ? ` redirecting to ${res.headers.location}` : '';
            const detail =
              status === 200
                ? `${shownUrl} via ${via} answered 200 with ${shownBody(body)} instead of the probe value`
                : `${shownUrl} via ${via} answered ${status}${location} with ${shownBody(body)}`;
            done({ kind: 'wrong', detail, status });
          });
        },
      );
      req.on('error', (err) => {
        done(
          combined.aborted && !signal?.aborted
            ? this.noAnswer(hostname, address)
            : this.connectionFailure(hostname, address, errorCode(err)),
        );
      });
      req.end();
    });
  }
}
