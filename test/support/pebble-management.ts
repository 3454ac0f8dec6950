/**
 * Pebble's management API beyond what test/support/pebble.ts wraps: the revocation status of a
 * certificate by serial (`GET /cert-status-by-serial/<serial>`, docs/protocols.md §5), over TLS
 * with Pebble's own certificate.
 */
import { request as httpsRequest } from 'node:https';
import type { PebbleInstance } from './pebble.js';

export interface PebbleCertStatus {
  /** `Valid` or `Revoked`. */
  status: string;
  serial: string;
  /** The RFC 5280 reason code of a revocation. */
  reason: number | undefined;
  revokedAt: string | undefined;
}

/** What Pebble says of the certificate with `serial` (hex, any case); undefined when it knows none. */
export async function pebbleCertStatus(
  pebble: Pick<PebbleInstance, 'managementUrl' | 'caBundlePem'>,
  serial: string,
): Promise<PebbleCertStatus | undefined> {
  const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = httpsRequest(
      `${pebble.managementUrl}/cert-status-by-serial/${serial.toLowerCase()}`,
      { ca: pebble.caBundlePem, timeout: 10_000 },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('Pebble management API: no answer within 10 s')));
    req.on('error', reject);
    req.end();
  });
  if (status === 404) return undefined;
  if (status !== 200) throw new Error(`Pebble /cert-status-by-serial/${serial} answered ${status}: ${body}`);
  const parsed = JSON.parse(body) as { Status?: string; Serial?: string; Reason?: number; RevokedAt?: string };
  return {
    status: String(parsed.Status),
    serial: String(parsed.Serial),
    reason: parsed.Reason,
    revokedAt: parsed.RevokedAt,
  };
}
