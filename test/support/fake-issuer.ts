/**
 * An Issuer for fast engine tests: it issues real certificates from a small test CA
 * (test/support/certs.ts), valid from the clock's "now", without any ACME server, and counts its
 * orders. `failWith(err)` makes the next orders fail; `onIssue` runs inside each order (to act while
 * an order is in flight, e.g. another writer storing a certificate meanwhile). Like a CA, it
 * calls `beforeFinalize` with the order's PendingOrder and issues ("finalizes") only after that
 * resolves; it remembers every finalized order, so `resume` downloads the same certificate again
 * (and counts that as a download, not an order). `failAfterFinalize(err)` makes the next order
 * fail after its certificate was issued, as a lost connection would. `revoke` records each
 * revocation by serial (a second one answers `alreadyRevoked`, as a CA does); `failRevokeWith(err)`
 * makes the next revocations fail.
 */
import type { PendingOrder } from '../../src/domain/certificate.js';
import type { Clock } from '../../src/ports/clock.js';
import { X509Certificate } from 'node:crypto';
import type {
  IssuedCertificate,
  Issuer,
  IssueHooks,
  IssueRequest,
  ResumeOutcome,
  RevokeOutcome,
  RevokeRequest,
} from '../../src/ports/issuer.js';
import type { RevocationReason } from '../../src/domain/revocation.js';
import { makeTestCertificate, TEST_CA_NAME, TEST_DIRECTORY_URL } from './certs.js';

const DAY_MS = 86_400_000;

export class FakeIssuer implements Issuer {
  readonly directoryUrl: string;
  /** Hostnames of every order placed, in order. */
  readonly orders: string[] = [];
  private failures: Error[] = [];
  onIssue: ((request: IssueRequest) => Promise<void>) | undefined;
  /** Order URL → the certificate issued for it. */
  private readonly finalized = new Map<string, IssuedCertificate>();
  /** Orders completed again by `resume`. */
  readonly resumed: string[] = [];
  private failuresAfterFinalize: Error[] = [];
  /** Every revocation the CA accepted, in order (serial, lower-case hex without leading zeros). */
  readonly revocations: Array<{ serial: string; reason: RevocationReason }> = [];
  private revokeFailures: Error[] = [];

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

  /** The next `times` orders fail after their certificate was issued. */
  failAfterFinalize(err: Error, times = 1): void {
    for (let i = 0; i < times; i++) this.failuresAfterFinalize.push(err);
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
    const orderUrl = `${this.directoryUrl}/order/${this.orders.length}`;
    await hooks.beforeFinalize({
      hostname: request.hostnames[0] ?? '',
      hostnames: [...request.hostnames],
      directoryUrl: this.directoryUrl,
      orderUrl,
      keyPem,
      keyType: request.keyType,
      createdAt: this.clock.now(),
    });
    const serial = new X509Certificate(certPem).serialNumber.toLowerCase().replace(/^0+/, '') || '0';
    const issued = {
      certPem,
      keyPem,
      notBefore,
      notAfter,
      issuer: TEST_CA_NAME,
      directoryUrl: this.directoryUrl,
      serial,
    };
    this.finalized.set(orderUrl, issued);
    const lost = this.failuresAfterFinalize.shift();
    if (lost !== undefined) throw lost;
    return issued;
  }

  /** The next `times` revocations fail with `err`. */
  failRevokeWith(err: Error, times = 1): void {
    for (let i = 0; i < times; i++) this.revokeFailures.push(err);
  }

  async revoke(request: RevokeRequest, signal?: AbortSignal): Promise<RevokeOutcome> {
    signal?.throwIfAborted();
    const failure = this.revokeFailures.shift();
    if (failure !== undefined) throw failure;
    const serial = new X509Certificate(request.certPem).serialNumber.toLowerCase().replace(/^0+/, '') || '0';
    if (this.revocations.some((r) => r.serial === serial)) return { alreadyRevoked: true, signedWith: 'account' };
    this.revocations.push({ serial, reason: request.reason });
    return { alreadyRevoked: false, signedWith: 'account' };
  }

  async resume(pending: PendingOrder): Promise<ResumeOutcome> {
    const issued = this.finalized.get(pending.orderUrl);
    if (issued === undefined) return { kind: 'gone', why: `the CA has no order ${pending.orderUrl}` };
    this.resumed.push(pending.orderUrl);
    return { kind: 'issued', certificate: issued };
  }
}
