/**
 * An Issuer for fast engine tests: it issues real certificates from a small test CA
 * (test/support/certs.ts), valid from the clock's "now", without any ACME server, and counts its
 * orders. `failWith(err)` makes the next orders fail; `onIssue` runs inside each order (to act while
 * an order is in flight, e.g. another writer storing a certificate meanwhile). It calls
 * `beforeFinalize` with a PendingOrder for its key before returning the certificate, as the
 * contract asks; it keeps no orders, so `resume` always says gone.
 */
import type { Clock } from '../../src/ports/clock.js';
import { X509Certificate } from 'node:crypto';
import type { IssuedCertificate, Issuer, IssueHooks, IssueRequest, ResumeOutcome } from '../../src/ports/issuer.js';
import { makeTestCertificate, TEST_CA_NAME, TEST_DIRECTORY_URL } from './certs.js';

const DAY_MS = 86_400_000;

export class FakeIssuer implements Issuer {
  readonly directoryUrl: string;
  /** Hostnames of every order placed, in order. */
  readonly orders: string[] = [];
  private failures: Error[] = [];
  onIssue: ((request: IssueRequest) => Promise<void>) | undefined;

  constructor(
    private readonly clock: Clock,
    options: { directoryUrl?: string; lifetimeDays?: number } = {},
  ) {
    this.directoryUrl = options.directoryUrl ?? TEST_DIRECTORY_URL;
    this.lifetimeDays = options.lifetimeDays ?? 90;
  }

  private readonly lifetimeDays: number;

  /** The next `times` orders fail with `err`. */
  failWith(err: Error, times = 1): void {
    for (let i = 0; i < times; i++) this.failures.push(err);
  }

  async issue(request: IssueRequest, hooks: IssueHooks, signal?: AbortSignal): Promise<IssuedCertificate> {
    signal?.throwIfAborted();
    this.orders.push(request.hostnames[0] ?? '');
    const failure = this.failures.shift();
    if (failure !== undefined) throw failure;
    await this.onIssue?.(request);
    const notBefore = new Date(Math.floor(this.clock.nowMs() / 1000) * 1000);
    const notAfter = new Date(notBefore.getTime() + this.lifetimeDays * DAY_MS);
    const { certPem, keyPem } = await makeTestCertificate({
      hostnames: request.hostnames,
      notBefore,
      notAfter,
      keyType: request.keyType,
    });
    await hooks.beforeFinalize({
      hostname: request.hostnames[0] ?? '',
      hostnames: [...request.hostnames],
      directoryUrl: this.directoryUrl,
      orderUrl: `${this.directoryUrl}/order/${this.orders.length}`,
      keyPem,
      keyType: request.keyType,
      createdAt: this.clock.now(),
    });
    const serial = new X509Certificate(certPem).serialNumber.toLowerCase().replace(/^0+/, '') || '0';
    return { certPem, keyPem, notBefore, notAfter, issuer: TEST_CA_NAME, directoryUrl: this.directoryUrl, serial };
  }

  async resume(): Promise<ResumeOutcome> {
    return { kind: 'gone', why: 'the fake issuer keeps no orders' };
  }
}
