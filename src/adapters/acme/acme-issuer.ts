/**
 * Issuer on acme-client 5.4 with HTTP-01.
 *
 * Uses acme-client's lower-level calls (not `auto()`), so that every step is ours: the AbortSignal
 * is checked between requests, challenge tokens go into the shared ChallengeStore before the CA is
 * asked to validate, the caller's write-ahead hook runs before finalize, and acme-client's
 * `verifyChallenge` self-check (system DNS, port 80) is never run. Status polling is ours too
 * (min·2^n capped at max, `pollAttempts` tries, the same schedule as acme-client's
 * waitForValidStatus): it can be aborted between polls, and it reads the problem document from an
 * `invalid` object instead of acme-client's bare detail string.
 *
 * Every HTTP request goes through a per-issuer transport (acme-http.ts): idempotent fetches are
 * retried a few times within about 30 s, nothing else is; no long sleeps; requestTimeoutMs on each
 * request; this issuer's CA bundle only, so several issuers for different CAs coexist in one
 * process. Each issuance gets its own acme-client Client for the shared account (cheap: the
 * account key, directory and nonces are the transport's), so that its AbortSignal reaches the
 * transport's retry waits. Keys, CSRs and the issued leaf are handled with Node's crypto
 * (acme-csr.ts). Failures come out classified (acme-errors.ts); errors of our own ports (e.g. the
 * challenge store) and of the caller's hook pass through unchanged.
 *
 * Revocation (`revoke`) goes through acme-client's `revokeCertificate` (signed by the account) on
 * the same transport; when the CA refuses the account (`unauthorized`: another account obtained
 * the certificate) and the certificate's key is given, the same request is sent once more signed
 * with that key, through acme-client's private `api.apiResourceRequest` (the public call cannot
 * sign with another key). `alreadyRevoked` is an answer, not a failure.
 */
import * as acme from 'acme-client';
import { X509Certificate } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AccountStore, AcmeAccount } from '../../ports/account-store.js';
import type { ChallengeStore } from '../../ports/challenge-store.js';
import { systemClock, type Clock } from '../../ports/clock.js';
import type {
  IssuedCertificate,
  Issuer,
  IssueHooks,
  IssueRequest,
  ResumeOutcome,
  RevokeOutcome,
  RevokeRequest,
} from '../../ports/issuer.js';
import { exponentialSchedule, retryDelayMs } from '../../domain/backoff.js';
import type { KeyType, PendingOrder } from '../../domain/certificate.js';
import { normalizeSerial, splitPemCertificates } from '../../domain/pem.js';
import { revocationCode } from '../../domain/revocation.js';
import { isChallengeToken } from '../../domain/challenge.js';
import { AbortedError, AcmeProblemError, ConsulAcmeError, throwIfAborted } from '../../errors.js';
import { F, type Logger } from '../../logging.js';
import { AcmeHttp, untilAborted, type AcmeRequestHook } from './acme-http.js';
import {
  AcmeServerProblem,
  classifyAcmeError,
  parseProblemDocument,
  shortProblemType,
  type ProblemDocument,
} from './acme-errors.js';
import {
  createCertificateKey,
  createCsrDer,
  csrPem,
  readCertificateKey,
  readLeaf,
  type CertificateKey,
} from './acme-csr.js';

export interface AcmeIssuerOptions {
  directoryUrl: string;
  /** Extra CA certificates (PEM) to trust for the directory, besides the system roots. */
  caBundlePem?: string;
  email?: string;
  eab?: { kid: string; hmacKey: string };
  accountStore: AccountStore;
  challengeStore: ChallengeStore;
  /** Status polling: first wait, cap, and number of polls per object. */
  pollIntervalMinMs: number;
  pollIntervalMaxMs: number;
  pollAttempts: number;
  /** Timeout of every ACME HTTP request. */
  requestTimeoutMs: number;
  logger: Logger;
  /** Called after every ACME HTTP request (retries included); for metrics. */
  onRequest?: AcmeRequestHook;
  /** For Retry-After dates and pending records; the system clock by default. */
  clock?: Clock;
}

type Order = acme.Order;
type Authorization = acme.Authorization;
interface Challenge {
  type: string;
  url: string;
  status: string;
  token?: string;
  error?: unknown;
}

const ACCOUNT_DOES_NOT_EXIST = 'urn:ietf:params:acme:error:accountDoesNotExist';

/**
 * acme-client 5.4.0's private request helper (src/api.js `apiResourceRequest`), used only to send a
 * revokeCert signed with a certificate's own key: its public `revokeCertificate` always signs with
 * the account (`kid`), and RFC 8555 §7.6 also allows the certificate key (`jwk`).
 */
interface AcmeApiInternals {
  api?: {
    apiResourceRequest?: (
      resource: string,
      payload: Record<string, unknown>,
      validStatusCodes: number[],
      options: { includeJwsKid: boolean },
    ) => Promise<unknown>;
  };
}

/** The problem type without the urn prefix, when `err` is a problem document the CA sent. */
function caProblemType(err: unknown): string | undefined {
  return err instanceof AcmeServerProblem ? shortProblemType(err.problem.type) : undefined;
}
/** What CAs say of an order they do not know (Pebble: 404 "No order for ID …"). */
const ORDER_UNKNOWN_DETAIL = /no order|not exist|not found|unknown order/i;

function problemText(problem: ProblemDocument | undefined): string {
  if (!problem) return 'no detail';
  const short = shortProblemType(problem.type);
  return `${problem.detail ?? 'no detail'}${short === undefined ? '' : ` (${short})`}`;
}

/** Why a failed fetch of an order means the order is gone for good; undefined when it may not be. */
function orderGoneReason(err: unknown): string | undefined {
  if (!(err instanceof AcmeServerProblem) || err.response === undefined) return undefined;
  const { status } = err.response;
  const short = shortProblemType(err.problem.type);
  const saysUnknown =
    (short === undefined || short === 'malformed') && ORDER_UNKNOWN_DETAIL.test(err.problem.detail ?? '');
  if (status === 404 || (status < 500 && saysUnknown)) {
    return `the CA does not know the order (HTTP ${status}: ${problemText(err.problem)})`;
  }
  if (status === 403 && short === 'unauthorized') {
    return `the CA refuses this account the order (HTTP 403: ${problemText(err.problem)})`;
  }
  return undefined;
}

/** The caller's hook failed: issue() rejects with exactly its error (this wrapper never escapes). */
class HookFailure extends Error {
  constructor(readonly error: unknown) {
    super('beforeFinalize failed');
  }
}

/** Tracks the step in progress, so an error says where it happened. */
interface Progress {
  step: string;
}

/** The Client one issuance or resumption uses, and the shared account Client it was made from. */
interface OrderSession {
  client: acme.Client;
  account: acme.Client;
}

export class AcmeIssuer implements Issuer {
  readonly directoryUrl: string;
  private readonly http: AcmeHttp;
  private readonly log: Logger;
  private readonly clock: Clock;
  private clientPromise: Promise<acme.Client> | undefined;
  private currentClient: acme.Client | undefined;
  /** The account key PEM of each account Client. */
  private readonly accountKeys = new WeakMap<acme.Client, string>();
  /** An account URL the CA said it does not know; re-register instead of using it again. */
  private staleAccountUrl: string | undefined;

  constructor(private readonly options: AcmeIssuerOptions) {
    this.directoryUrl = options.directoryUrl;
    this.clock = options.clock ?? systemClock;
    this.http = new AcmeHttp({
      directoryUrl: options.directoryUrl,
      requestTimeoutMs: options.requestTimeoutMs,
      clock: this.clock,
      ...(options.caBundlePem === undefined ? {} : { caBundlePem: options.caBundlePem }),
      ...(options.onRequest === undefined ? {} : { onRequest: options.onRequest }),
    });
    this.log = options.logger; // the caller names the component
  }

  /** TLS connections opened to the CA so far (keep-alive reuses them). */
  connectionsOpened(): number {
    return this.http.connectionsOpened();
  }

  /** Closes idle connections to the CA and ends waits between retries. */
  close(): void {
    this.http.close();
  }

  async issue(request: IssueRequest, hooks: IssueHooks, signal?: AbortSignal): Promise<IssuedCertificate> {
    const hostnames = [...request.hostnames];
    const commonName = hostnames[0];
    if (commonName === undefined) {
      throw new ConsulAcmeError('INVALID_HOSTNAME', 'a certificate needs at least one hostname', { retryable: false });
    }
    const what = `acme order for ${hostnames.join(', ')}`;
    const log = this.log.child({ [F.hostname]: commonName });
    const progress: Progress = { step: 'account' };
    let session: OrderSession | undefined;
    try {
      throwIfAborted(signal, what);
      session = await this.session(signal, what);
      const { client } = session;

      progress.step = 'key generation';
      const key = await createCertificateKey(request.keyType);

      throwIfAborted(signal, what);
      progress.step = 'new order';
      let order = await client.createOrder({ identifiers: hostnames.map((value) => ({ type: 'dns', value })) });
      log.debug({ order: order.url, status: order.status }, 'acme order created');

      throwIfAborted(signal, what);
      progress.step = 'authorization';
      const authorizations = await client.getAuthorizations(order);
      progress.step = 'validation';
      await this.authorizeAll(client, authorizations, signal, what, log);

      progress.step = 'order';
      order = await this.poll('order', () => client.getOrder(order), ['ready', 'valid'], signal, what);

      // Write-ahead: the caller makes the order and its key durable before anything is bought.
      progress.step = 'write-ahead';
      const pending: PendingOrder = {
        hostname: commonName,
        hostnames,
        directoryUrl: this.directoryUrl,
        orderUrl: order.url,
        keyPem: key.keyPem,
        keyType: request.keyType,
        createdAt: this.clock.now(),
      };
      try {
        await hooks.beforeFinalize(pending);
      } catch (err) {
        throw new HookFailure(err);
      }

      throwIfAborted(signal, what);
      if (order.status !== 'valid') {
        progress.step = 'finalize';
        order = await this.finalize(client, order, key, request.keyType, hostnames, signal, what);
      }
      return await this.download(client, order, key, signal, what, progress, log);
    } catch (err) {
      throw this.failure(err, signal, what, hostnames, progress, session);
    }
  }

  async resume(pending: PendingOrder, signal?: AbortSignal): Promise<ResumeOutcome> {
    const hostnames = [...pending.hostnames];
    if (pending.directoryUrl !== this.directoryUrl) {
      return {
        kind: 'gone',
        why: `the order was placed with ${pending.directoryUrl}, not with this issuer's directory ${this.directoryUrl}`,
      };
    }
    const what = `acme order for ${hostnames.join(', ')} (resuming ${pending.orderUrl})`;
    const log = this.log.child({ [F.hostname]: pending.hostname });
    const progress: Progress = { step: 'account' };
    let session: OrderSession | undefined;
    let key: CertificateKey;
    try {
      key = readCertificateKey(pending.keyPem, pending.keyType);
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      return { kind: 'gone', why: `the pending record's private key cannot be read: ${reason}` };
    }
    try {
      throwIfAborted(signal, what);
      session = await this.session(signal, what);
      const { client } = session;

      progress.step = 'order';
      let order: Order;
      try {
        order = await client.getOrder({ url: pending.orderUrl } as Order);
      } catch (err) {
        const why = orderGoneReason(err);
        if (why !== undefined) return { kind: 'gone', why };
        throw err;
      }
      log.debug({ order: order.url, status: order.status }, 'acme order resumed');

      const expires = typeof order.expires === 'string' ? Date.parse(order.expires) : Number.NaN;
      const expired = !Number.isNaN(expires) && expires <= this.clock.now().getTime();
      switch (order.status) {
        case 'valid':
          break;
        case 'processing':
          order = await this.poll('order', () => client.getOrder(order), ['valid'], signal, what);
          break;
        case 'ready':
          if (expired) return { kind: 'gone', why: `the order expired at ${order.expires} before it was finalized` };
          throwIfAborted(signal, what);
          progress.step = 'finalize';
          order = await this.finalize(client, order, key, pending.keyType, hostnames, signal, what);
          break;
        case 'pending':
          return {
            kind: 'gone',
            why: 'the order still has authorizations pending (a pending record is written only once they are valid), so it cannot be finalized',
          };
        case 'invalid':
          return {
            kind: 'gone',
            why: `the CA marked the order invalid: ${problemText(parseProblemDocument(order.error))}`,
          };
        default:
          return { kind: 'gone', why: `the order has a status this issuer does not know: ${String(order.status)}` };
      }
      return { kind: 'issued', certificate: await this.download(client, order, key, signal, what, progress, log) };
    } catch (err) {
      // The order turned invalid while we polled it (the CA gave up issuing): nothing to resume.
      if (err instanceof AcmeServerProblem && err.response === undefined) {
        return { kind: 'gone', why: `the order became invalid: ${problemText(err.problem)}` };
      }
      throw this.failure(err, signal, what, hostnames, progress, session);
    }
  }

  async revoke(request: RevokeRequest, signal?: AbortSignal): Promise<RevokeOutcome> {
    const leafPem = splitPemCertificates(request.certPem)[0];
    let serial = '?';
    let hostnames: string[] = [];
    let leaf: X509Certificate;
    try {
      leaf = new X509Certificate(leafPem ?? '');
      serial = normalizeSerial(leaf.serialNumber);
      hostnames = (leaf.subjectAltName ?? '').split(', ').flatMap((n) => (n.startsWith('DNS:') ? [n.slice(4)] : []));
    } catch (err) {
      throw new ConsulAcmeError('INTERNAL', `revocation: the certificate to revoke is not a PEM certificate`, {
        cause: err,
      });
    }
    const what = `acme revocation of certificate ${serial}`;
    const log = this.log.child({ [F.hostname]: hostnames[0] });
    const progress: Progress = { step: 'revocation' };
    // The leaf's DER, base64url: the `certificate` field of a revokeCert request (RFC 8555 §7.6).
    const payload = { certificate: leaf.raw.toString('base64url'), reason: revocationCode(request.reason) };
    let session: OrderSession | undefined;
    try {
      throwIfAborted(signal, what);
      session = await this.session(signal, what);
      try {
        await session.client.revokeCertificate(leafPem ?? '', { reason: payload.reason });
        log.debug({ serial, signed_with: 'account' }, 'acme certificate revoked');
        return { alreadyRevoked: false, signedWith: 'account' };
      } catch (err) {
        if (caProblemType(err) === 'alreadyRevoked') return { alreadyRevoked: true, signedWith: 'account' };
        if (caProblemType(err) !== 'unauthorized' || request.keyPem === undefined) throw err;
        log.debug({ serial }, 'the CA refused this account the revocation; signing with the certificate key');
      }
      throwIfAborted(signal, what);
      progress.step = 'revocation signed with the certificate key';
      const byKey = new acme.Client({ directoryUrl: this.directoryUrl, accountKey: request.keyPem });
      this.http.attach(byKey, signal);
      const send = (byKey as unknown as AcmeApiInternals).api?.apiResourceRequest;
      if (typeof send !== 'function')
        throw new Error('acme-client internals changed: Client#api.apiResourceRequest is missing');
      try {
        await send.call((byKey as unknown as AcmeApiInternals).api, 'revokeCert', payload, [200], {
          includeJwsKid: false,
        });
      } catch (err) {
        if (caProblemType(err) === 'alreadyRevoked') return { alreadyRevoked: true, signedWith: 'certificate-key' };
        throw err;
      }
      log.debug({ serial, signed_with: 'certificate-key' }, 'acme certificate revoked');
      return { alreadyRevoked: false, signedWith: 'certificate-key' };
    } catch (err) {
      throw this.failure(err, signal, what, hostnames, progress, session);
    }
  }

  // ---------------------------------------------------------------- steps

  /** A Client of its own for one issuance, on the shared account, whose retry waits end with `signal`. */
  private async session(signal: AbortSignal | undefined, what: string): Promise<OrderSession> {
    const account = await untilAborted(this.client(), signal, what);
    const accountKey = this.accountKeys.get(account);
    if (accountKey === undefined) throw new Error('internal: the account client has no key');
    const client = new acme.Client({
      directoryUrl: this.directoryUrl,
      accountKey,
      accountUrl: account.getAccountUrl(),
      backoffMin: this.options.pollIntervalMinMs,
      backoffMax: this.options.pollIntervalMaxMs,
      backoffAttempts: this.options.pollAttempts,
    });
    this.http.attach(client, signal);
    return { client, account };
  }

  /** Sends finalize with a CSR for `key`, then polls until the order is valid. */
  private async finalize(
    client: acme.Client,
    order: Order,
    key: CertificateKey,
    keyType: KeyType,
    hostnames: readonly string[],
    signal: AbortSignal | undefined,
    what: string,
  ): Promise<Order> {
    const csr = csrPem(createCsrDer(hostnames, key.privateKey, keyType));
    const finalized = await client.finalizeOrder(order, csr);
    if (finalized.status === 'valid') return finalized;
    return this.poll('order', () => client.getOrder(finalized), ['valid'], signal, what);
  }

  /** Downloads the certificate of a valid order and checks that it is for `key`. */
  private async download(
    client: acme.Client,
    order: Order,
    key: CertificateKey,
    signal: AbortSignal | undefined,
    what: string,
    progress: Progress,
    log: Logger,
  ): Promise<IssuedCertificate> {
    throwIfAborted(signal, what);
    progress.step = 'certificate download';
    const certPem = await client.getCertificate(order);
    const leaf = readLeaf(certPem, key);
    if (!leaf.matchesKey) {
      throw new AcmeProblemError(
        'ACME_PROBLEM',
        `${what}: the certificate the CA returned for order ${order.url} (serial ${leaf.serial}) is not for the order's private key`,
        { retryable: false },
      );
    }
    log.debug({ not_after: leaf.notAfter.toISOString(), serial: leaf.serial }, 'acme certificate downloaded');
    return {
      certPem,
      keyPem: key.keyPem,
      notBefore: leaf.notBefore,
      notAfter: leaf.notAfter,
      issuer: leaf.issuer,
      directoryUrl: this.directoryUrl,
      serial: leaf.serial,
    };
  }

  /** What issue() or resume() rejects with for `err`. */
  private failure(
    err: unknown,
    signal: AbortSignal | undefined,
    what: string,
    hostnames: string[],
    progress: Progress,
    session: OrderSession | undefined,
  ): unknown {
    if (err instanceof HookFailure) return err.error;
    if (signal?.aborted) {
      return err instanceof AbortedError && err.message === `${what} was aborted`
        ? err
        : new AbortedError(what, { cause: err });
    }
    if (err instanceof ConsulAcmeError) return err; // ours (transport closed, store errors) pass through
    const classified = classifyAcmeError(err, this.clock.now(), { hostnames, step: progress.step });
    if (session && classified instanceof AcmeProblemError && classified.problemType === ACCOUNT_DOES_NOT_EXIST) {
      this.forgetAccount(session.account);
    }
    return classified;
  }

  // ---------------------------------------------------------------- account

  /** The Client for the shared account; one registration in flight per issuer. */
  private client(): Promise<acme.Client> {
    if (!this.clientPromise) {
      const promise = this.loadClient();
      this.clientPromise = promise;
      promise.catch(() => {
        if (this.clientPromise === promise) this.clientPromise = undefined;
      });
    }
    return this.clientPromise;
  }

  /**
   * The CA no longer knows the account `client` used (e.g. a CA reset): drop that client and
   * register the same key again on next use. A newer client, already reloaded, is kept.
   */
  private forgetAccount(client: acme.Client): void {
    try {
      this.staleAccountUrl = client.getAccountUrl();
    } catch {
      // never registered: nothing to forget
    }
    if (this.currentClient === client) {
      this.currentClient = undefined;
      this.clientPromise = undefined;
    }
  }

  private async loadClient(): Promise<acme.Client> {
    const { accountStore, email, eab } = this.options;
    let account = await accountStore.get(this.directoryUrl);
    if (!account) {
      const key = await acme.crypto.createPrivateEcdsaKey('P-256');
      const candidate: AcmeAccount = {
        directoryUrl: this.directoryUrl,
        accountKeyPem: key.toString('utf8'),
        accountUrl: undefined,
        email,
        createdAt: this.clock.now(),
      };
      // Resolves the account stored afterwards: ours, or another instance's when it won the race.
      account = await accountStore.create(candidate);
    }
    const knownUrl =
      account.accountUrl !== undefined && account.accountUrl !== this.staleAccountUrl ? account.accountUrl : undefined;
    const client = new acme.Client({
      directoryUrl: this.directoryUrl,
      accountKey: account.accountKeyPem,
      ...(knownUrl === undefined ? {} : { accountUrl: knownUrl }),
      ...(eab === undefined ? {} : { externalAccountBinding: { kid: eab.kid, hmacKey: eab.hmacKey } }),
      backoffMin: this.options.pollIntervalMinMs,
      backoffMax: this.options.pollIntervalMaxMs,
      backoffAttempts: this.options.pollAttempts,
    });
    this.http.attach(client);
    this.accountKeys.set(client, account.accountKeyPem);
    if (knownUrl === undefined) {
      // Another instance may have registered this key already (it won the race, or died before
      // storing the URL): look the account up first (RFC 8555 §7.3.1), and register only when the
      // CA has none. Registering again instead makes acme-client send an empty update, which
      // strict CAs refuse as malformed.
      if (!(await this.findExistingAccount(client))) {
        try {
          await client.createAccount({
            termsOfServiceAgreed: true,
            ...(email ? { contact: [`mailto:${email}`] } : {}),
          });
        } catch (err) {
          // Another instance registered the same key between our look-up and our registration: the
          // CA answered 200 with the account's URL, and acme-client followed it with an account
          // update that a strict CA refuses as empty. The account exists; use its URL.
          if (!this.hasAccountUrl(client)) throw err;
          this.log.info('acme account registered by another instance meanwhile; joining it');
        }
      }
      const accountUrl = client.getAccountUrl();
      await accountStore.update({ ...account, accountUrl, email: email ?? account.email });
      this.staleAccountUrl = undefined;
      this.log.info({ account_url: accountUrl }, 'acme account registered');
    }
    this.currentClient = client;
    return client;
  }

  private hasAccountUrl(client: acme.Client): boolean {
    try {
      client.getAccountUrl();
      return true;
    } catch {
      return false;
    }
  }

  /** Whether the CA already knows the client's key; sets the client's account URL when it does. */
  private async findExistingAccount(client: acme.Client): Promise<boolean> {
    try {
      await client.createAccount({ onlyReturnExisting: true });
      return true;
    } catch (err) {
      const classified = classifyAcmeError(err, this.clock.now());
      if (classified instanceof AcmeProblemError && classified.problemType === ACCOUNT_DOES_NOT_EXIST) return false;
      throw err;
    }
  }

  // ---------------------------------------------------------------- authorizations

  /**
   * Satisfies every authorization in parallel. The first failure stops the others (they clean up
   * and deactivate); the error thrown is that first failure, or AbortedError when `signal` fired.
   */
  private async authorizeAll(
    client: acme.Client,
    authorizations: Authorization[],
    signal: AbortSignal | undefined,
    what: string,
    log: Logger,
  ): Promise<void> {
    const siblings = new AbortController();
    const combined = signal ? AbortSignal.any([signal, siblings.signal]) : siblings.signal;
    let firstError: Error | undefined;
    const results = await Promise.allSettled(
      authorizations.map((authz) =>
        this.authorize(client, authz, combined, what, log).catch((err: unknown) => {
          if (firstError === undefined && !(err instanceof AbortedError)) {
            firstError = err instanceof Error ? err : new Error(String(err));
          }
          siblings.abort(new Error('another authorization of the order failed'));
          throw err;
        }),
      ),
    );
    throwIfAborted(signal, what);
    if (firstError !== undefined) throw firstError;
    const rejected = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (rejected) throw rejected.reason instanceof Error ? rejected.reason : new Error(String(rejected.reason));
  }

  private async authorize(
    client: acme.Client,
    authz: Authorization,
    signal: AbortSignal,
    what: string,
    log: Logger,
  ): Promise<void> {
    const name = authz.identifier.value;
    if (authz.status === 'valid') return;
    if (authz.status !== 'pending') {
      throw this.invalidObject(authz, `authorization for ${name} is ${authz.status}`);
    }

    let settled = false; // the authorization reached valid or invalid: nothing to deactivate
    // Once the challenge is submitted the CA's validation settles the authorization by itself;
    // deactivating it mid-validation gains nothing and wedges Pebble 2.4.0 (a leaked lock makes
    // every later new-order hang).
    let submitted = false;
    try {
      const challenge = (authz.challenges as Challenge[]).find((c) => c.type === 'http-01');
      if (!challenge) {
        throw new AcmeProblemError(
          'ACME_PROBLEM',
          `acme validation for ${name} failed: the CA offered no http-01 challenge`,
          {
            retryable: false,
          },
        );
      }
      const token = challenge.token ?? '';
      if (!isChallengeToken(token)) {
        throw new AcmeProblemError(
          'ACME_PROBLEM',
          `acme validation for ${name} failed: the CA sent a malformed http-01 token`,
          {
            retryable: true,
          },
        );
      }
      throwIfAborted(signal, what);
      const keyAuthorization = await client.getChallengeKeyAuthorization(
        challenge as Parameters<acme.Client['getChallengeKeyAuthorization']>[0],
      );
      await this.options.challengeStore.put(token, keyAuthorization);
      try {
        log.debug({ identifier: name, authorization: authz.url }, 'acme challenge published');
        throwIfAborted(signal, what);
        await client.completeChallenge(challenge as Parameters<acme.Client['completeChallenge']>[0]);
        submitted = true;
        const final = await this.poll(
          `authorization for ${name}`,
          async () => (await client.getAuthorizations({ authorizations: [authz.url] } as Order))[0] ?? authz,
          ['valid'],
          signal,
          what,
          (a) => (a.challenges as Challenge[]).find((c) => c.type === 'http-01')?.error,
          { type: 'dns', value: name },
        );
        settled = final.status === 'valid';
      } finally {
        await this.options.challengeStore.delete(token).catch((err: unknown) => {
          log.warn({ [F.err]: err }, 'acme challenge token could not be removed');
        });
      }
    } catch (err) {
      if (err instanceof AcmeServerProblem && err.response === undefined) settled = true; // became invalid
      if (!settled && !submitted) await this.deactivate(client, authz, log);
      throw err;
    }
  }

  /** Best effort: a pending authorization left behind counts against the CA's limits. */
  private async deactivate(client: acme.Client, authz: Authorization, log: Logger): Promise<void> {
    const identifier = authz.identifier.value;
    try {
      await client.deactivateAuthorization(authz);
      log.debug({ identifier, authorization: authz.url }, 'acme authorization deactivated');
    } catch (err) {
      log.debug({ identifier, [F.err]: err }, 'acme authorization could not be deactivated');
    }
  }

  // ---------------------------------------------------------------- polling

  /**
   * Fetches `fetch()` until its status is one of `done`: rejects with the object's problem when it
   * turns invalid, with ACME_PROBLEM (retryable) when the attempts run out, AbortedError on abort.
   */
  private async poll<T extends { status: string; error?: unknown }>(
    what: string,
    fetch: () => Promise<T>,
    done: readonly string[],
    signal: AbortSignal | undefined,
    abortWhat: string,
    errorOf: (item: T) => unknown = (item) => item.error,
    identifier?: { type: string; value: string },
  ): Promise<T> {
    const { pollIntervalMinMs, pollIntervalMaxMs, pollAttempts } = this.options;
    for (let attempt = 0; ; attempt++) {
      throwIfAborted(signal, abortWhat);
      const item = await fetch();
      if (done.includes(item.status)) return item;
      if (item.status === 'invalid') {
        const problem = parseProblemDocument(errorOf(item)) ?? parseProblemDocument(item.error);
        throw new AcmeServerProblem({
          ...(problem ?? { detail: `${what} became invalid` }),
          ...(identifier ? { identifier } : {}),
        });
      }
      if (attempt + 1 >= pollAttempts) {
        throw new AcmeProblemError(
          'ACME_PROBLEM',
          `${abortWhat}: ${what} still ${item.status} after ${pollAttempts} polls`,
          {
            retryable: true,
          },
        );
      }
      const delayMs = retryDelayMs(attempt + 1, exponentialSchedule(pollIntervalMinMs, pollIntervalMaxMs));
      try {
        await sleep(delayMs, undefined, signal ? { signal } : undefined);
      } catch {
        throwIfAborted(signal, abortWhat);
      }
    }
  }

  private invalidObject(item: object, fallback: string): AcmeServerProblem {
    return new AcmeServerProblem(parseProblemDocument((item as { error?: unknown }).error) ?? { detail: fallback });
  }
}
