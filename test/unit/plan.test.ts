import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { CertificateData, CertificateFacts, StoredRecord } from '../../src/domain/certificate.js';
import type { OperatorRequest } from '../../src/domain/request.js';
import {
  DEFAULT_EMERGENCY_FRACTION,
  DEFAULT_RENEW_FRACTION,
  PLAN_REASONS,
  needsRenewal,
  planCertificate,
  renewAt,
  type DesiredCertificate,
  type Plan,
  type PlanOptions,
  type PlanReason,
} from '../../src/domain/plan.js';

const DAY = 86_400_000;
const NOW = new Date('2025-06-01T00:00:00.000Z');
const LE = 'https://acme-v02.api.letsencrypt.org/directory';
const STAGING = 'https://acme-staging-v02.api.letsencrypt.org/directory';

/** `days` relative to the fixed clock. */
function at(days: number): Date {
  return new Date(NOW.getTime() + days * DAY);
}

/** Certificate facts the planner reads; no real PEM needed. Defaults: a 90-day cert issued 10 days ago. */
function cert(overrides: Partial<CertificateData> = {}): CertificateData {
  return {
    hostname: 'app.example.com',
    hostnames: ['app.example.com'],
    certPem: 'not a real certificate',
    keyPem: 'not a real key',
    notBefore: at(-10),
    notAfter: at(80),
    directoryUrl: LE,
    issuer: 'Test CA',
    keyType: 'ec-p256',
    obtainedAt: at(-10),
    ...overrides,
  };
}

function stored(certificate: CertificateData | undefined, overrides: Partial<StoredRecord> = {}): StoredRecord {
  return {
    hostname: 'app.example.com',
    version: 3,
    managed: true,
    certificate,
    problem: certificate === undefined ? 'cert field is missing' : undefined,
    ...overrides,
  };
}

const desired: DesiredCertificate = {
  hostname: 'app.example.com',
  hostnames: ['app.example.com'],
  directoryUrl: LE,
  keyType: 'ec-p256',
};

const options: PlanOptions = {
  renewWhenRemainingFraction: DEFAULT_RENEW_FRACTION,
  emergencyRemainingFraction: DEFAULT_EMERGENCY_FRACTION,
  retireGraceMs: undefined,
};
const withGrace: PlanOptions = { ...options, retireGraceMs: 7 * DAY };

interface Case {
  name: string;
  desired: DesiredCertificate | undefined;
  stored: StoredRecord | undefined;
  options?: PlanOptions;
  undeclaredSince?: Date;
  request?: OperatorRequest;
  expected: Plan;
}

function expect(action: Plan['action'], reason: PlanReason, dueDate?: Date, emergency = false): Plan {
  return {
    action,
    reason,
    renewAt: reason === 'NotYetDue' ? dueDate : undefined,
    retireAt: reason === 'GracePeriod' ? dueDate : undefined,
    emergency,
  };
}

/** What another tool's certificate says (StoredFacts.foreign): by default valid, for the name, 80 days left. */
function foreignFacts(overrides: Partial<CertificateFacts> = {}): CertificateFacts {
  const { certPem: _c, keyPem: _k, ...facts } = cert({ directoryUrl: '', issuer: 'R3' });
  return { ...facts, ...overrides };
}

/** A record another tool wrote: not ours, with what its certificate says (null: it cannot be read). */
function foreign(facts: CertificateFacts | null = foreignFacts()): StoredRecord {
  const record = stored(undefined, { managed: false, problem: 'not written by consul-acme' });
  return facts === null ? record : { ...record, foreign: facts };
}

const adoptAll: PlanOptions = { ...options, adopt: 'all' };

function request(kind: OperatorRequest['kind'], replaces?: CertificateData): OperatorRequest {
  return {
    hostname: 'app.example.com',
    kind,
    requestedAt: at(-1),
    requestedBy: 'instance-a',
    replaces:
      replaces === undefined
        ? undefined
        : { obtainedAt: replaces.obtainedAt, notAfter: replaces.notAfter, serial: '1a2b', certPem: replaces.certPem },
    revokeReason: kind === 'revoke' ? 'keyCompromise' : undefined,
    revokedAt: undefined,
  };
}

const refusedAdoption = (refusal: NonNullable<Plan['adoptionRefused']>): Plan => ({
  ...expect('keep', 'NotManaged'),
  adoptionRefused: refusal,
});

const cases: Case[] = [
  // Adoptable
  {
    name: 'with adoption on, a declared record another tool wrote is adopted',
    desired,
    stored: foreign(),
    options: adoptAll,
    expected: expect('adopt', 'Adoptable'),
  },
  {
    name: 'an adopt request adopts a record while the setting is off',
    desired,
    stored: foreign(),
    request: request('adopt'),
    expected: expect('adopt', 'Adoptable'),
  },
  {
    name: 'a pattern of the setting adopts the names it matches',
    desired,
    stored: foreign(),
    options: { ...options, adopt: ['*.example.com'] },
    expected: expect('adopt', 'Adoptable'),
  },
  {
    name: 'a name the setting does not match is left alone, with no refusal',
    desired,
    stored: foreign(),
    options: { ...options, adopt: ['other.example.com'] },
    expected: expect('keep', 'NotManaged'),
  },
  {
    name: 'an expired certificate another tool wrote is not adopted, and says why',
    desired,
    stored: foreign(foreignFacts({ notAfter: at(-1) })),
    options: adoptAll,
    expected: refusedAdoption('Expired'),
  },
  {
    name: 'a certificate and key that do not load or match are not adopted',
    desired,
    stored: foreign(null),
    options: adoptAll,
    expected: refusedAdoption('Unreadable'),
  },
  {
    name: 'a certificate for other names than the record is not adopted',
    desired,
    stored: foreign(foreignFacts({ hostnames: ['other.example.com'] })),
    options: adoptAll,
    expected: refusedAdoption('NameNotCovered'),
  },
  {
    name: 'a record whose name nobody declares is not adopted',
    desired: undefined,
    stored: foreign(),
    request: request('adopt'),
    expected: refusedAdoption('NotDeclared'),
  },
  // Requested and Revoked
  {
    name: 'a reissue request for the stored certificate renews it now',
    desired,
    stored: stored(cert()),
    request: request('reissue', cert()),
    expected: expect('renew', 'Requested'),
  },
  {
    name: 'a reissue request for a certificate already replaced changes nothing',
    desired,
    stored: stored(cert()),
    request: request('reissue', cert({ obtainedAt: at(-40) })),
    expected: expect('keep', 'NotYetDue', at(50)),
  },
  {
    name: 'a revoke request for the stored certificate renews it as an emergency',
    desired,
    stored: stored(cert()),
    request: request('revoke', cert()),
    expected: expect('renew', 'Revoked', undefined, true),
  },
  {
    name: 'an expired certificate is renewed as expired, whatever was requested',
    desired,
    stored: stored(cert({ notBefore: at(-91), notAfter: at(-1) })),
    request: request('revoke', cert({ notBefore: at(-91), notAfter: at(-1) })),
    expected: expect('renew', 'Expired', undefined, true),
  },
  {
    name: 'a request for a name nobody declares any more does not renew it',
    desired: undefined,
    stored: stored(cert()),
    request: request('reissue', cert()),
    expected: expect('keep', 'GracePeriod', at(80)),
  },
  // NewerFormat
  {
    name: 'a record a newer release wrote is not reissued, though this release cannot read it',
    desired,
    stored: stored(undefined, { newerFormat: 2, problem: 'written in format 2 by a newer release' }),
    expected: expect('keep', 'NewerFormat'),
  },
  {
    name: 'a record a newer release wrote is never retired when undeclared',
    desired: undefined,
    stored: stored(undefined, { newerFormat: 2 }),
    options: withGrace,
    undeclaredSince: at(-100),
    expected: expect('keep', 'NewerFormat'),
  },
  // NotManaged
  {
    name: 'a record someone else wrote is never touched, even when expired',
    desired,
    stored: stored(cert({ notAfter: at(-1) }), { managed: false }),
    expected: expect('keep', 'NotManaged'),
  },
  {
    name: 'a record someone else wrote is never retired when undeclared',
    desired: undefined,
    stored: stored(cert(), { managed: false }),
    options: withGrace,
    undeclaredSince: at(-100),
    expected: expect('keep', 'NotManaged'),
  },
  // Missing
  {
    name: 'a declared name with nothing stored is issued',
    desired,
    stored: undefined,
    expected: expect('issue', 'Missing'),
  },
  // Unparseable
  {
    name: 'a stored record we cannot read is issued again',
    desired,
    stored: stored(undefined),
    expected: expect('issue', 'Unparseable'),
  },
  // Expired
  {
    name: 'a certificate past notAfter is renewed as an emergency',
    desired,
    stored: stored(cert({ notBefore: at(-91), notAfter: at(-1) })),
    expected: expect('renew', 'Expired', undefined, true),
  },
  {
    name: 'a certificate expiring exactly now counts as expired',
    desired,
    stored: stored(cert({ notBefore: at(-90), notAfter: NOW })),
    expected: expect('renew', 'Expired', undefined, true),
  },
  {
    name: 'an expired certificate from another CA is renewed as expired first',
    desired,
    stored: stored(cert({ notAfter: at(-1), directoryUrl: STAGING })),
    expected: expect('renew', 'Expired', undefined, true),
  },
  // IssuerChanged
  {
    name: 'a certificate from another ACME directory is renewed',
    desired,
    stored: stored(cert({ directoryUrl: STAGING })),
    expected: expect('renew', 'IssuerChanged'),
  },
  {
    name: 'a nearly expired certificate from another directory is an emergency renewal',
    desired,
    stored: stored(cert({ notBefore: at(-89.9), notAfter: at(0.1), directoryUrl: STAGING })),
    expected: expect('renew', 'IssuerChanged', undefined, true),
  },
  // HostnamesChanged
  {
    name: 'a certificate missing a declared name is renewed',
    desired: { ...desired, hostnames: ['app.example.com', 'www.example.com'] },
    stored: stored(cert()),
    expected: expect('renew', 'HostnamesChanged'),
  },
  {
    name: 'a certificate with an extra name is renewed',
    desired,
    stored: stored(cert({ hostnames: ['app.example.com', 'old.example.com'] })),
    expected: expect('renew', 'HostnamesChanged'),
  },
  {
    name: 'the order of names does not matter',
    desired: { ...desired, hostnames: ['b.example.com', 'a.example.com'] },
    stored: stored(cert({ hostnames: ['a.example.com', 'b.example.com'] })),
    expected: expect('keep', 'NotYetDue', at(50)),
  },
  // KeyTypeChanged
  {
    name: 'a certificate with another key type is renewed',
    desired: { ...desired, keyType: 'rsa-2048' },
    stored: stored(cert()),
    expected: expect('renew', 'KeyTypeChanged'),
  },
  // Expiring
  {
    name: 'a 90-day certificate with 29 days left is renewed',
    desired,
    stored: stored(cert({ notBefore: at(-61), notAfter: at(29) })),
    expected: expect('renew', 'Expiring'),
  },
  {
    name: 'a certificate exactly at its renewal time is renewed',
    desired,
    stored: stored(cert({ notBefore: at(-60), notAfter: at(30) })),
    expected: expect('renew', 'Expiring'),
  },
  {
    name: 'a 45-day certificate with 14 days left is renewed, as a fraction of its lifetime',
    desired,
    stored: stored(cert({ notBefore: at(-31), notAfter: at(14) })),
    expected: expect('renew', 'Expiring'),
  },
  {
    name: 'a certificate with under a fiftieth of its lifetime left is an emergency',
    desired,
    stored: stored(cert({ notBefore: at(-89), notAfter: at(1) })),
    expected: expect('renew', 'Expiring', undefined, true),
  },
  {
    name: 'a custom renewal fraction renews earlier',
    desired,
    stored: stored(cert()),
    options: { ...options, renewWhenRemainingFraction: 0.9 },
    expected: expect('renew', 'Expiring'),
  },
  // NotYetDue
  {
    name: 'a fresh 90-day certificate is kept until a third of its lifetime remains',
    desired,
    stored: stored(cert()),
    expected: expect('keep', 'NotYetDue', at(50)),
  },
  {
    name: 'a 90-day certificate with 31 days left is kept for one more day',
    desired,
    stored: stored(cert({ notBefore: at(-59), notAfter: at(31) })),
    expected: expect('keep', 'NotYetDue', at(1)),
  },
  {
    name: 'a 45-day certificate is kept until 15 days remain',
    desired,
    stored: stored(cert({ notBefore: NOW, notAfter: at(45) })),
    expected: expect('keep', 'NotYetDue', at(30)),
  },
  // NoLongerDeclared
  {
    name: 'an undeclared name with nothing stored needs nothing',
    desired: undefined,
    stored: undefined,
    expected: expect('keep', 'NoLongerDeclared'),
  },
  {
    name: 'an undeclared certificate past notAfter is retired',
    desired: undefined,
    stored: stored(cert({ notAfter: at(-1) })),
    expected: expect('retire', 'NoLongerDeclared'),
  },
  {
    name: 'an undeclared unreadable record is retired',
    desired: undefined,
    stored: stored(undefined),
    expected: expect('retire', 'NoLongerDeclared'),
  },
  {
    name: 'an undeclared certificate is retired once the grace period has passed',
    desired: undefined,
    stored: stored(cert()),
    options: withGrace,
    undeclaredSince: at(-7),
    expected: expect('retire', 'NoLongerDeclared'),
  },
  // GracePeriod
  {
    name: 'an undeclared valid certificate is kept until it expires',
    desired: undefined,
    stored: stored(cert()),
    expected: expect('keep', 'GracePeriod', at(80)),
  },
  {
    name: 'an undeclared certificate is kept during the grace period',
    desired: undefined,
    stored: stored(cert()),
    options: withGrace,
    undeclaredSince: at(-2),
    expected: expect('keep', 'GracePeriod', at(5)),
  },
  {
    name: 'an undeclared expired certificate is kept while a grace period runs',
    desired: undefined,
    stored: stored(cert({ notAfter: at(-1) })),
    options: withGrace,
    undeclaredSince: at(-1),
    expected: expect('keep', 'GracePeriod', at(6)),
  },
  {
    name: 'without a start time the grace period starts now',
    desired: undefined,
    stored: stored(cert()),
    options: withGrace,
    expected: expect('keep', 'GracePeriod', at(7)),
  },
];

describe('planCertificate', () => {
  for (const c of cases) {
    test(c.name, () => {
      assert.deepEqual(
        planCertificate(NOW, c.desired, c.stored, c.options ?? options, c.undeclaredSince, c.request),
        c.expected,
      );
    });
  }

  test('every reason in the closed list has at least one case', () => {
    const covered = new Set(cases.map((c) => c.expected.reason));
    assert.deepEqual(
      PLAN_REASONS.filter((reason) => !covered.has(reason)),
      [],
    );
  });

  test('a kept certificate always becomes due in the future', () => {
    for (const c of cases) {
      const plan = planCertificate(NOW, c.desired, c.stored, c.options ?? options, c.undeclaredSince, c.request);
      if (plan.action === 'keep' && plan.renewAt !== undefined) assert.ok(plan.renewAt > NOW, c.name);
    }
  });
});

describe('renewAt and needsRenewal', () => {
  const validity = { notBefore: at(0), notAfter: at(90) };
  test('renewal is due when a third of a 90-day lifetime remains', () => {
    assert.deepEqual(renewAt(validity, 1 / 3), at(60));
  });
  test('a fraction of zero means renew at notAfter', () => {
    assert.deepEqual(renewAt(validity, 0), at(90));
  });
  test('a certificate is not due one millisecond before its renewal time', () => {
    assert.equal(needsRenewal(new Date(at(60).getTime() - 1), validity, 1 / 3), false);
  });
  test('a certificate is due at its renewal time', () => {
    assert.equal(needsRenewal(at(60), validity, 1 / 3), true);
  });
});
