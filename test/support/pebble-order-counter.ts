/**
 * What Pebble received, counted from Pebble's own log (Pebble 2.4.0 prints one line per event, see
 * the patterns below; checked by running it). This is the most honest source available: our ACME
 * client's own logs could miss a request, and a TLS-terminating proxy would need the WFE key, which
 * the Pebble launcher keeps to itself.
 *
 *   Added order "<id>" to the db                                  → a new order (POST /order-plz)
 *   Order <id> is fully authorized. Processing finalization       → a finalization (POST /finalize-order/)
 *   Issued certificate serial <hex> for order <id>                → a certificate issued
 *   Pulled a task from the Tasks queue: ... Value:"<name>" ...    → a challenge the client asked Pebble to validate
 *
 * Orders carry no identifier in the log, so a certificate is tied to its order through the serial:
 * the serial in Vault → "Issued certificate serial" → order id.
 *
 * The launcher keeps the last 256 KB of output; counting refuses a log whose start was dropped.
 */
import { request as httpsRequest } from 'node:https';
import type { PebbleInstance } from './pebble.js';
import { waitFor } from './wait.js';

const PEBBLE_START = 'Starting Pebble ACME server';
const ADDED_ORDER = /Added order "([^"]+)" to the db/g;
const FINALIZING = /Order (\S+) is fully authorized\. Processing finalization/g;
const ISSUED = /Issued certificate serial ([0-9a-fA-F]+) for order (\S+)/g;
const VALIDATION_TASK =
  /Pulled a task from the Tasks queue: .*?Identifier:acme\.Identifier\{Type:"dns", Value:"([^"]+)"\}/g;

export interface PebbleActivity {
  /** Order ids, in the order Pebble created them. */
  orders: string[];
  /** Order ids Pebble started finalizing. */
  finalized: string[];
  /** Normalized serial (lower-case hex, no leading zeros) → order id. */
  issued: Map<string, string>;
  /** Identifier → challenges Pebble was asked to validate for it. */
  validationsByName: Map<string, number>;
}

/** Lower-case hex without leading zeros, as both Pebble's log and X509Certificate.serialNumber can be compared. */
export function normalizeSerial(hex: string): string {
  return hex.toLowerCase().replace(/^0+(?=.)/, '');
}

export function pebbleActivity(logs: string): PebbleActivity {
  if (!logs.includes(PEBBLE_START)) {
    throw new Error("Pebble's log was truncated by the launcher (256 KB kept): cannot count what it received");
  }
  const orders = [...logs.matchAll(ADDED_ORDER)].map((m) => m[1]!);
  const finalized = [...logs.matchAll(FINALIZING)].map((m) => m[1]!);
  const issued = new Map<string, string>();
  for (const m of logs.matchAll(ISSUED)) issued.set(normalizeSerial(m[1]!), m[2]!);
  const validationsByName = new Map<string, number>();
  for (const m of logs.matchAll(VALIDATION_TASK)) validationsByName.set(m[1]!, (validationsByName.get(m[1]!) ?? 0) + 1);
  return { orders, finalized, issued, validationsByName };
}

/** Undefined when Pebble's ACME front end answers GET /dir within 5 s; otherwise why not. */
export async function pebbleProblem(pebble: PebbleInstance): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = httpsRequest(pebble.directoryUrl, { ca: pebble.caBundlePem, timeout: 5_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200 ? undefined : `GET /dir returned ${res.statusCode}`));
    });
    req.on('timeout', () => req.destroy(new Error('GET /dir: no answer within 5000 ms')));
    req.on('error', (err) => resolve(err.message));
    req.end();
  });
}

/**
 * New-order requests Pebble accepted but never answered. Pebble 2.4.0 wedges its whole database
 * when an authorization is deactivated while its challenge is being validated (its
 * prepAuthorizationForDisplay leaks the challenge's read lock; the VA then blocks forever on it,
 * holding the authorization's lock), and from then on every POST /order-plz hangs while GET /dir
 * still answers.
 */
export function unansweredNewOrders(logs: string): number {
  const calls = logs.split('POST /order-plz -> calling handler()').length - 1;
  const added = [...logs.matchAll(ADDED_ORDER)].length;
  return Math.max(0, calls - added);
}

/**
 * waitFor, but a timeout says whether Pebble is the reason: "Pebble stopped answering" when its
 * directory does not answer (docs/protocols.md §5: Pebble 2.4.0 can deadlock), else the
 * original timeout with the tail of Pebble's log (a log that stopped moving while orders were
 * pending points at the per-order deadlock, letsencrypt/pebble#554).
 */
export async function waitWithPebble<T>(
  pebble: PebbleInstance,
  what: string,
  probe: () => Promise<T | undefined | false> | T | undefined | false,
  opts: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<T> {
  try {
    return await waitFor(what, probe, opts);
  } catch (err) {
    const problem = await pebbleProblem(pebble);
    if (problem !== undefined)
      throw new Error(`Pebble stopped answering (${problem}) while waiting for ${what}`, { cause: err });
    const hanging = unansweredNewOrders(pebble.logs());
    if (hanging > 0) {
      throw new Error(
        `Pebble stopped answering: ${hanging} new-order request(s) never completed while waiting for ${what} ` +
          '(its directory still answers; Pebble 2.4.0 wedges when an authorization is deactivated during validation)',
        { cause: err },
      );
    }
    const tail = pebble.logs().split('\n').slice(-25).join('\n');
    const message = err instanceof Error ? err.message : String(err);
    throw new Error(`${message}\n(Pebble's directory still answers; last lines of its log:)\n${tail}`, { cause: err });
  }
}
