/**
 * The renewal planner: what to do with one certificate, and why. Pure: a function of `now`, the
 * desired certificate, the stored record, the options and the operator's request for the name, if
 * any. The reason comes from a closed list and flows into logs, metrics and the status API
 * unchanged.
 */
import { adoptionAllowed, adoptionRefusal, type AdoptionRefusal, type AdoptionSetting } from './adopt.js';
import type { CertificateFacts, KeyType, StoredFacts } from './certificate.js';
import { isRequestOpen, type OperatorRequest } from './request.js';

export const PLAN_REASONS = [
  'Missing',
  'Expiring',
  'Expired',
  'HostnamesChanged',
  'IssuerChanged',
  'KeyTypeChanged',
  'Unparseable',
  'NotYetDue',
  'NoLongerDeclared',
  'NotManaged',
  'GracePeriod',
  /** A record another tool wrote, which consul-acme takes over (src/domain/adopt.ts). */
  'Adoptable',
  /** The operator asked for a new certificate (`consul-acme reissue`). */
  'Requested',
  /** The operator asked for the certificate to be revoked and replaced (`consul-acme revoke`). */
  'Revoked',
  /** A newer release wrote the record in a format this one does not read (src/domain/record-format.ts). */
  'NewerFormat',
] as const;
export type PlanReason = (typeof PLAN_REASONS)[number];
/** `adopt`: write the record's own certificate and key again as consul-acme's (nothing is ordered). */
export type PlanAction = 'issue' | 'renew' | 'keep' | 'retire' | 'adopt';

/** What the catalog and policy ask for under one hostname. */
export interface DesiredCertificate {
  hostname: string;
  hostnames: string[];
  directoryUrl: string;
  keyType: KeyType;
}

export interface PlanOptions {
  /** Renew when less than this fraction of the lifetime remains (default a third). */
  renewWhenRemainingFraction: number;
  /** A renewal is an emergency when less than this fraction remains (default 1/50). */
  emergencyRemainingFraction: number;
  /** How long an undeclared certificate is kept; undefined keeps it until it expires. */
  retireGraceMs: number | undefined;
  /** Which records consul-acme did not write it takes over without a command (CONSUL_ACME_ADOPT); undefined: none. */
  adopt?: AdoptionSetting;
}

export const DEFAULT_RENEW_FRACTION = 1 / 3;
export const DEFAULT_EMERGENCY_FRACTION = 1 / 50;
export const DEFAULT_PLAN_OPTIONS: Readonly<PlanOptions> = Object.freeze({
  renewWhenRemainingFraction: DEFAULT_RENEW_FRACTION,
  emergencyRemainingFraction: DEFAULT_EMERGENCY_FRACTION,
  retireGraceMs: undefined,
});

export interface Plan {
  action: PlanAction;
  reason: PlanReason;
  /** When a kept certificate falls due for renewal (NotYetDue only). */
  renewAt: Date | undefined;
  /** When a certificate nobody declares any more will be removed (GracePeriod only). */
  retireAt: Date | undefined;
  /** Less than the emergency fraction of the lifetime remains (or none at all): skip the queue's patience. */
  emergency: boolean;
  /** Why a record consul-acme did not write is not adopted although adoption was asked for it (NotManaged only). */
  adoptionRefused?: AdoptionRefusal;
}

type Validity = Pick<CertificateFacts, 'notBefore' | 'notAfter'>;

/** The moment `fraction` of the lifetime remains: notAfter − fraction × (notAfter − notBefore). */
export function renewAt(cert: Validity, fraction: number): Date {
  const lifetimeMs = cert.notAfter.getTime() - cert.notBefore.getTime();
  return new Date(cert.notAfter.getTime() - fraction * lifetimeMs);
}

/**
 * Whether no more than `fraction` of the lifetime remains at `now`. The boundary counts as due,
 * so a kept certificate's renewAt is always strictly in the future.
 */
export function needsRenewal(now: Date, cert: Validity, fraction: number): boolean {
  return now.getTime() >= renewAt(cert, fraction).getTime();
}

function isEmergency(now: Date, cert: Validity, options: PlanOptions): boolean {
  const remainingMs = cert.notAfter.getTime() - now.getTime();
  const lifetimeMs = cert.notAfter.getTime() - cert.notBefore.getTime();
  return remainingMs < options.emergencyRemainingFraction * lifetimeMs;
}

function plan(action: PlanAction, reason: PlanReason, emergency = false): Plan {
  return { action, reason, renewAt: undefined, retireAt: undefined, emergency };
}

/** Whether two lists hold the same set of names, in any order. */
export function sameHostnames(a: readonly string[], b: readonly string[]): boolean {
  const left = new Set(a);
  const right = new Set(b);
  return left.size === right.size && [...left].every((name) => right.has(name));
}

/** A certificate nobody declares any more: keep it for the grace period, then retire it. */
function planUndeclared(now: Date, stored: StoredFacts, options: PlanOptions, undeclaredSince?: Date): Plan {
  if (options.retireGraceMs === undefined) {
    const cert = stored.certificate;
    if (cert === undefined || now.getTime() >= cert.notAfter.getTime()) return plan('retire', 'NoLongerDeclared');
    return { ...plan('keep', 'GracePeriod'), retireAt: cert.notAfter };
  }
  // Without a start time the grace period starts now: deleting a certificate is never the default.
  const retireAtMs = (undeclaredSince ?? now).getTime() + options.retireGraceMs;
  if (now.getTime() >= retireAtMs) return plan('retire', 'NoLongerDeclared');
  return { ...plan('keep', 'GracePeriod'), retireAt: new Date(retireAtMs) };
}

/**
 * What to do with a record consul-acme did not write: adopt it when it is declared, adoption is
 * asked for it (the setting, or an `adopt` request) and nothing refuses it; else leave it alone.
 */
function planUnmanaged(
  now: Date,
  desired: DesiredCertificate | undefined,
  stored: StoredFacts,
  options: PlanOptions,
  request: OperatorRequest | undefined,
): Plan {
  const asked = request?.kind === 'adopt' || adoptionAllowed(options.adopt, stored.hostname);
  if (!asked) return plan('keep', 'NotManaged');
  const refused = desired === undefined ? 'NotDeclared' : adoptionRefusal(now, stored.hostname, stored.foreign);
  if (refused !== undefined) return { ...plan('keep', 'NotManaged'), adoptionRefused: refused };
  return plan('adopt', 'Adoptable');
}

/**
 * Decides what to do with one certificate. Rules, first match wins:
 * written by a newer release in a format this one does not read → keep/NewerFormat (never
 * reissued or retired by this release); not ours → adopt/Adoptable when adoption is asked for it
 * and nothing refuses it (src/domain/adopt.ts), else keep/NotManaged (with `adoptionRefused` when it
 * was asked); undeclared → keep/NoLongerDeclared (nothing stored), keep/GracePeriod or
 * retire/NoLongerDeclared; nothing stored → issue/Missing; unreadable → issue/Unparseable; past
 * notAfter → renew/Expired; an open revoke request → renew/Revoked (always an emergency); an open
 * reissue request → renew/Requested; other directory → renew/IssuerChanged; other names →
 * renew/HostnamesChanged; other key type → renew/KeyTypeChanged; renewal fraction reached →
 * renew/Expiring; otherwise keep/NotYetDue with renewAt. A kept GracePeriod plan carries retireAt.
 * `emergency` is true on every renew whose certificate has less than the emergency fraction left.
 *
 * @param undeclaredSince when the certificate's names stopped being declared (used with retireGraceMs)
 * @param request the operator's request for this name (src/domain/request.ts), if any; a request
 *   about a certificate that is no longer the stored one changes nothing
 */
export function planCertificate(
  now: Date,
  desired: DesiredCertificate | undefined,
  stored: StoredFacts | undefined,
  options: PlanOptions,
  undeclaredSince?: Date,
  request?: OperatorRequest,
): Plan {
  if (stored?.newerFormat !== undefined) return plan('keep', 'NewerFormat');
  if (stored !== undefined && !stored.managed) return planUnmanaged(now, desired, stored, options, request);
  if (desired === undefined) {
    return stored === undefined
      ? plan('keep', 'NoLongerDeclared')
      : planUndeclared(now, stored, options, undeclaredSince);
  }
  if (stored === undefined) return plan('issue', 'Missing');
  const cert = stored.certificate;
  if (cert === undefined) return plan('issue', 'Unparseable');
  if (now.getTime() >= cert.notAfter.getTime()) return plan('renew', 'Expired', true);

  const emergency = isEmergency(now, cert, options);
  if (request !== undefined && request.kind !== 'adopt' && isRequestOpen(request, stored)) {
    return request.kind === 'revoke' ? plan('renew', 'Revoked', true) : plan('renew', 'Requested', emergency);
  }
  if (cert.directoryUrl !== desired.directoryUrl) return plan('renew', 'IssuerChanged', emergency);
  if (!sameHostnames(cert.hostnames, desired.hostnames)) return plan('renew', 'HostnamesChanged', emergency);
  if (cert.keyType !== desired.keyType) return plan('renew', 'KeyTypeChanged', emergency);
  if (needsRenewal(now, cert, options.renewWhenRemainingFraction)) return plan('renew', 'Expiring', emergency);
  return { ...plan('keep', 'NotYetDue'), renewAt: renewAt(cert, options.renewWhenRemainingFraction) };
}
