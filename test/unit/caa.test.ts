import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  caaLookupNodes,
  decideCaa,
  defaultCaaIdentities,
  parseIssueValue,
  type CaaLookup,
  type CaaOptions,
  type CaaRecord,
  type CaaVerdict,
} from '../../src/domain/caa.js';

const HOST = 'www.shop.example.com';
const LE: CaaOptions = { identities: ['letsencrypt.org'] };

const issue = (value: string, flags = 0): CaaRecord => ({ flags, tag: 'issue', value });
const records = (node: string, ...list: CaaRecord[]): CaaLookup => ({ node, kind: 'records', records: list });
const none = (node: string): CaaLookup => ({ node, kind: 'none' });
const failed = (node: string, error: string): CaaLookup => ({ node, kind: 'failed', error });

/** The lookups of HOST's four nodes: `at` gives the outcome of some, the rest have no records. */
function tree(at: Record<string, CaaLookup>): CaaLookup[] {
  return caaLookupNodes(HOST).map((node) => at[node] ?? none(node));
}

describe('caaLookupNodes', () => {
  test('climbs from the name to its top-level label, never the root', () => {
    assert.deepEqual(caaLookupNodes('www.shop.example.com'), [
      'www.shop.example.com',
      'shop.example.com',
      'example.com',
      'com',
    ]);
  });
  test('a trailing dot and capitals do not change the nodes', () => {
    assert.deepEqual(caaLookupNodes('A.Example.COM.'), ['a.example.com', 'example.com', 'com']);
  });
});

describe('decideCaa', () => {
  const cases: Array<{
    name: string;
    lookups: CaaLookup[];
    options?: CaaOptions;
    allowed: boolean;
    reason: CaaVerdict['reason'];
    node?: string;
    detail?: RegExp;
  }> = [
    {
      name: 'no records anywhere up the tree let any CA issue',
      lookups: tree({}),
      allowed: true,
      reason: 'NoRecords',
    },
    {
      name: 'a record at the name that names the CA allows it',
      lookups: tree({ [HOST]: records(HOST, issue('letsencrypt.org')) }),
      allowed: true,
      reason: 'Authorized',
      node: HOST,
    },
    {
      name: 'a record at the name that names another CA refuses, naming the record and our identity',
      lookups: tree({ [HOST]: records(HOST, issue('ca.example.net')) }),
      allowed: false,
      reason: 'NotAuthorized',
      node: HOST,
      detail:
        /^the CAA records at www\.shop\.example\.com \(0 issue "ca\.example\.net"\) do not allow letsencrypt\.org: 0 issue "ca\.example\.net" names another CA$/,
    },
    {
      name: 'the climb stops at the first node with records: the parent decides when the name has none',
      lookups: tree({ 'example.com': records('example.com', issue('ca.example.net')) }),
      allowed: false,
      reason: 'NotAuthorized',
      node: 'example.com',
      detail: /at example\.com/,
    },
    {
      name: 'a set at the name hides a refusing set higher up',
      lookups: tree({
        [HOST]: records(HOST, issue('letsencrypt.org')),
        'example.com': records('example.com', issue('ca.example.net')),
      }),
      allowed: true,
      reason: 'Authorized',
      node: HOST,
    },
    {
      name: 'a refusing set at the name is not overruled by an allowing set higher up',
      lookups: tree({
        [HOST]: records(HOST, issue('ca.example.net')),
        'example.com': records('example.com', issue('letsencrypt.org')),
      }),
      allowed: false,
      reason: 'NotAuthorized',
      node: HOST,
    },
    {
      name: 'one allowing record among several CAs is enough',
      lookups: tree({ [HOST]: records(HOST, issue('ca.example.net'), issue('letsencrypt.org')) }),
      allowed: true,
      reason: 'Authorized',
    },
    {
      name: 'any of several configured identities is enough',
      lookups: tree({ [HOST]: records(HOST, issue('pki.example.org')) }),
      options: { identities: ['letsencrypt.org', 'pki.example.org'] },
      allowed: true,
      reason: 'Authorized',
    },
    {
      name: 'a lookup that failed before any records were found refuses, naming the node and the error',
      lookups: tree({ 'shop.example.com': failed('shop.example.com', 'ESERVFAIL') }),
      allowed: false,
      reason: 'LookupFailed',
      node: 'shop.example.com',
      detail: /the CAA lookup of shop\.example\.com failed \(ESERVFAIL\)/,
    },
    {
      name: 'a lookup that failed above the relevant set does not matter',
      lookups: tree({ [HOST]: records(HOST, issue('letsencrypt.org')), com: failed('com', 'ETIMEOUT') }),
      allowed: true,
      reason: 'Authorized',
    },
    {
      name: 'issuewild is ignored for a name that is not a wildcard: a set of only issuewild does not restrict it',
      lookups: tree({ [HOST]: records(HOST, { flags: 0, tag: 'issuewild', value: 'ca.example.net' }) }),
      allowed: true,
      reason: 'NoIssueProperty',
      node: HOST,
    },
    {
      name: 'issuewild naming the CA does not allow it when issue records name others',
      lookups: tree({
        [HOST]: records(HOST, issue('ca.example.net'), { flags: 0, tag: 'issuewild', value: 'letsencrypt.org' }),
      }),
      allowed: false,
      reason: 'NotAuthorized',
    },
    {
      name: 'a set of only iodef does not restrict anyone',
      lookups: tree({ [HOST]: records(HOST, { flags: 0, tag: 'iodef', value: 'mailto:security@example.com' }) }),
      allowed: true,
      reason: 'NoIssueProperty',
    },
    {
      name: 'tags are compared without regard to case',
      lookups: tree({ [HOST]: records(HOST, { flags: 0, tag: 'ISSUE', value: 'ca.example.net' }) }),
      allowed: false,
      reason: 'NotAuthorized',
    },
    {
      name: 'the issuer name is compared as written: different capitals do not allow the CA, and the detail says why',
      lookups: tree({ [HOST]: records(HOST, issue('LetsEncrypt.org')) }),
      allowed: false,
      reason: 'NotAuthorized',
      detail: /"LetsEncrypt\.org" differs from letsencrypt\.org only in case/,
    },
    {
      name: 'spaces around the issuer name do not matter',
      lookups: tree({ [HOST]: records(HOST, issue('  letsencrypt.org  ')) }),
      allowed: true,
      reason: 'Authorized',
    },
    {
      name: 'issue ";" allows no CA at all',
      lookups: tree({ [HOST]: records(HOST, issue(';')) }),
      allowed: false,
      reason: 'NotAuthorized',
      detail: /0 issue ";" allows no CA/,
    },
    {
      name: 'a trailing ";" with no parameters still names the CA',
      lookups: tree({ [HOST]: records(HOST, issue('letsencrypt.org;')) }),
      allowed: true,
      reason: 'Authorized',
    },
    {
      name: 'validationmethods that list http-01 allow the order',
      lookups: tree({ [HOST]: records(HOST, issue('letsencrypt.org; validationmethods=dns-01,http-01')) }),
      allowed: true,
      reason: 'Authorized',
    },
    {
      name: 'validationmethods without http-01 refuse, since consul-acme validates with http-01',
      lookups: tree({ [HOST]: records(HOST, issue('letsencrypt.org; validationmethods=dns-01')) }),
      allowed: false,
      reason: 'NotAuthorized',
      detail: /allows only validation by dns-01, not http-01/,
    },
    {
      name: 'a parameter name is read without regard to case',
      lookups: tree({ [HOST]: records(HOST, issue('letsencrypt.org; ValidationMethods=dns-01')) }),
      allowed: false,
      reason: 'NotAuthorized',
    },
    {
      name: 'an accounturi is given the benefit of the doubt when our account URL is not known',
      lookups: tree({ [HOST]: records(HOST, issue('letsencrypt.org; accounturi=https://ca.test/acct/1')) }),
      allowed: true,
      reason: 'Authorized',
    },
    {
      name: 'an accounturi naming another account refuses when ours is known',
      lookups: tree({ [HOST]: records(HOST, issue('letsencrypt.org; accounturi=https://ca.test/acct/1')) }),
      options: { identities: ['letsencrypt.org'], accountUri: 'https://ca.test/acct/2' },
      allowed: false,
      reason: 'NotAuthorized',
      detail: /allows only the account https:\/\/ca\.test\/acct\/1, not https:\/\/ca\.test\/acct\/2/,
    },
    {
      name: 'an accounturi naming our account allows the order',
      lookups: tree({ [HOST]: records(HOST, issue('letsencrypt.org; accounturi=https://ca.test/acct/2')) }),
      options: { identities: ['letsencrypt.org'], accountUri: 'https://ca.test/acct/2' },
      allowed: true,
      reason: 'Authorized',
    },
    {
      name: 'unknown parameters are ignored',
      lookups: tree({ [HOST]: records(HOST, issue('letsencrypt.org; policy=ev')) }),
      allowed: true,
      reason: 'Authorized',
    },
    {
      name: 'a parameter that is not tag=value makes the record malformed, which allows no CA',
      lookups: tree({ [HOST]: records(HOST, issue('letsencrypt.org; nonsense')) }),
      allowed: false,
      reason: 'NotAuthorized',
      detail: /is malformed \(parameter "nonsense" is not tag=value\)/,
    },
    {
      name: 'a malformed validationmethods list allows no CA',
      lookups: tree({ [HOST]: records(HOST, issue('letsencrypt.org; validationmethods=http-01,,')) }),
      allowed: false,
      reason: 'NotAuthorized',
      detail: /malformed validationmethods/,
    },
    {
      name: 'a critical record with an unknown tag forbids issuance even beside a record naming the CA',
      lookups: tree({
        [HOST]: records(HOST, issue('letsencrypt.org'), { flags: 128, tag: 'tbs', value: 'unknown' }),
      }),
      allowed: false,
      reason: 'CriticalUnknown',
      detail: /128 tbs "unknown", marked critical/,
    },
    {
      name: 'the flag bit of value 1 is read as critical too, as Let\u2019s Encrypt reads it',
      lookups: tree({
        [HOST]: records(HOST, issue('letsencrypt.org'), { flags: 1, tag: 'tbs', value: 'unknown' }),
      }),
      allowed: false,
      reason: 'CriticalUnknown',
    },
    {
      name: 'a non-critical unknown tag is ignored',
      lookups: tree({
        [HOST]: records(HOST, issue('letsencrypt.org'), { flags: 0, tag: 'tbs', value: 'unknown' }),
      }),
      allowed: true,
      reason: 'Authorized',
    },
    {
      name: 'critical issue and iodef records are understood and do not forbid anything by being critical',
      lookups: tree({
        [HOST]: records(HOST, issue('letsencrypt.org', 128), {
          flags: 128,
          tag: 'iodef',
          value: 'mailto:security@example.com',
        }),
      }),
      allowed: true,
      reason: 'Authorized',
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const verdict = decideCaa(HOST, c.lookups, c.options ?? LE);
      assert.equal(verdict.allowed, c.allowed, JSON.stringify(verdict));
      assert.equal(verdict.reason, c.reason);
      if (c.node !== undefined) assert.equal(verdict.node, c.node);
      if (c.detail !== undefined) {
        assert.ok(!verdict.allowed);
        assert.match(verdict.detail, c.detail);
      }
    });
  }

  test('the refusal names every record of the set and the configured identities', () => {
    const verdict = decideCaa(
      HOST,
      tree({
        'example.com': records(
          'example.com',
          issue('ca.example.net'),
          { flags: 0, tag: 'iodef', value: 'mailto:x@example.com' },
          issue('letsencrypt.org; validationmethods=dns-01'),
        ),
      }),
      { identities: ['letsencrypt.org', 'pki.example.org'] },
    );
    assert.ok(!verdict.allowed);
    assert.equal(
      verdict.detail,
      'the CAA records at example.com (0 issue "ca.example.net", 0 iodef "mailto:x@example.com", ' +
        '0 issue "letsencrypt.org; validationmethods=dns-01") do not allow letsencrypt.org or pki.example.org: ' +
        '0 issue "ca.example.net" names another CA; ' +
        '0 issue "letsencrypt.org; validationmethods=dns-01" allows only validation by dns-01, not http-01',
    );
  });
});

describe('parseIssueValue', () => {
  const cases: Array<{ name: string; value: string; expected: ReturnType<typeof parseIssueValue> }> = [
    {
      name: 'a bare issuer name has no parameters',
      value: 'letsencrypt.org',
      expected: { ok: true, issuer: 'letsencrypt.org', parameters: new Map() },
    },
    {
      name: 'parameters after ";" are read as lower-case tags with their values',
      value: 'letsencrypt.org; AccountURI=https://a.test/acct/1 ; validationmethods=http-01',
      expected: {
        ok: true,
        issuer: 'letsencrypt.org',
        parameters: new Map([
          ['accounturi', 'https://a.test/acct/1'],
          ['validationmethods', 'http-01'],
        ]),
      },
    },
    { name: 'an empty value names no issuer', value: '', expected: { ok: true, issuer: '', parameters: new Map() } },
    {
      name: 'an issuer name with a space inside is malformed',
      value: 'lets encrypt.org',
      expected: { ok: false, problem: 'issuer "lets encrypt.org" is not a domain name' },
    },
    {
      name: 'a parameter value with a space inside is malformed',
      value: 'letsencrypt.org; validationmethods=http-01, dns-01',
      expected: { ok: false, problem: 'parameter value "http-01, dns-01" has characters CAA forbids' },
    },
  ];
  for (const c of cases) test(c.name, () => assert.deepEqual(parseIssueValue(c.value), c.expected));
});

describe('defaultCaaIdentities', () => {
  const cases: Array<{ name: string; directoryUrl: string; expected: string[] }> = [
    {
      name: 'Let\u2019s Encrypt production is letsencrypt.org',
      directoryUrl: 'https://acme-v02.api.letsencrypt.org/directory',
      expected: ['letsencrypt.org'],
    },
    {
      name: 'Let\u2019s Encrypt staging checks CAA for the same identity',
      directoryUrl: 'https://acme-staging-v02.api.letsencrypt.org/directory',
      expected: ['letsencrypt.org'],
    },
    {
      name: 'any other CA has no default identity, so no CAA check',
      directoryUrl: 'https://ca.internal.example:9000/acme/acme/directory',
      expected: [],
    },
    {
      name: 'a look-alike host is not Let\u2019s Encrypt',
      directoryUrl: 'https://acme.notletsencrypt.org/directory',
      expected: [],
    },
  ];
  for (const c of cases) test(c.name, () => assert.deepEqual(defaultCaaIdentities(c.directoryUrl), c.expected));
});
