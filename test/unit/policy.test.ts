import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  applyPolicy,
  BAD_WILDCARD_REASON,
  EMPTY_POLICY,
  INNER_WHITESPACE_REASON,
  matchPattern,
  parsePolicyList,
  policyFromTexts,
  policyVerdict,
  type Policy,
  type PolicyVerdict,
} from '../../src/domain/policy.js';
import { IP_ADDRESS_REASON, SINGLE_LABEL_REASON } from '../../src/domain/hostname.js';

function policy(lists: Partial<Pick<Policy, 'deny' | 'allow' | 'always'>>): Policy {
  return { deny: lists.deny ?? [], allow: lists.allow ?? [], always: lists.always ?? [], invalid: [], unreadable: [] };
}

describe('parsePolicyList', () => {
  const cases: Array<{
    name: string;
    text: string;
    patterns: string[];
    invalid?: Array<{ line: number; text: string; reason: string | RegExp }>;
  }> = [
    { name: 'an empty text is an empty list', text: '', patterns: [] },
    {
      name: 'one exact name per line is kept in order',
      text: 'b.example.com\na.example.com\n',
      patterns: ['b.example.com', 'a.example.com'],
    },
    { name: 'a wildcard pattern is kept', text: '*.example.com', patterns: ['*.example.com'] },
    {
      name: 'whole-line comments are ignored',
      text: '# staging names\napp.example.com\n  # indented comment',
      patterns: ['app.example.com'],
    },
    { name: 'a trailing comment is cut off', text: 'app.example.com   # the shop', patterns: ['app.example.com'] },
    {
      name: 'blank and whitespace-only lines are ignored',
      text: '\n   \n\tapp.example.com\t\n\n',
      patterns: ['app.example.com'],
    },
    {
      name: 'Windows line endings are accepted',
      text: 'a.example.com\r\nb.example.com\r\n',
      patterns: ['a.example.com', 'b.example.com'],
    },
    {
      name: 'patterns are lower-cased',
      text: 'App.EXAMPLE.com\n*.Example.COM',
      patterns: ['app.example.com', '*.example.com'],
    },
    { name: 'a trailing dot is dropped', text: 'app.example.com.', patterns: ['app.example.com'] },
    { name: 'an internationalised name becomes punycode', text: 'bücher.example', patterns: ['xn--bcher-kva.example'] },
    {
      name: 'duplicates are kept once',
      text: 'a.example.com\nA.example.com\na.example.com.',
      patterns: ['a.example.com'],
    },
    {
      name: 'a star glued to a label is invalid and the rest applies',
      text: 'ok.example.com\n*foo.com\nalso.example.com',
      patterns: ['ok.example.com', 'also.example.com'],
      invalid: [{ line: 2, text: '*foo.com', reason: BAD_WILDCARD_REASON }],
    },
    {
      name: 'a star in the middle is invalid',
      text: 'a.*.com',
      patterns: [],
      invalid: [{ line: 1, text: 'a.*.com', reason: BAD_WILDCARD_REASON }],
    },
    {
      name: 'a double star is invalid',
      text: '**.x.com',
      patterns: [],
      invalid: [{ line: 1, text: '**.x.com', reason: BAD_WILDCARD_REASON }],
    },
    {
      name: 'two wildcard labels are invalid',
      text: '*.*.x.com',
      patterns: [],
      invalid: [{ line: 1, text: '*.*.x.com', reason: BAD_WILDCARD_REASON }],
    },
    {
      name: 'a lone star is invalid',
      text: '*',
      patterns: [],
      invalid: [{ line: 1, text: '*', reason: BAD_WILDCARD_REASON }],
    },
    {
      name: 'an IPv4 address is invalid',
      text: '10.0.0.1',
      patterns: [],
      invalid: [{ line: 1, text: '10.0.0.1', reason: IP_ADDRESS_REASON }],
    },
    {
      name: 'a space inside a pattern is invalid',
      text: 'a.example.com b.example.com',
      patterns: [],
      invalid: [{ line: 1, text: 'a.example.com b.example.com', reason: INNER_WHITESPACE_REASON }],
    },
    {
      name: 'a single label is invalid',
      text: 'localhost',
      patterns: [],
      invalid: [{ line: 1, text: 'localhost', reason: SINGLE_LABEL_REASON }],
    },
    {
      name: 'a wildcard over a single label is invalid and says what follows the star',
      text: '*.com',
      patterns: [],
      invalid: [{ line: 1, text: '*.com', reason: `after "*.": ${SINGLE_LABEL_REASON}` }],
    },
    {
      name: 'a bad character is reported with the line number counting comments and blanks',
      text: '# header\n\nok.example.com\nbad_name!.example.com # oops',
      patterns: ['ok.example.com'],
      invalid: [{ line: 4, text: 'bad_name!.example.com', reason: /character "!"/ }],
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const parsed = parsePolicyList(c.text);
      assert.deepEqual(parsed.patterns, c.patterns);
      const expected = c.invalid ?? [];
      assert.equal(parsed.invalid.length, expected.length, JSON.stringify(parsed.invalid));
      expected.forEach((e, i) => {
        const got = parsed.invalid[i]!;
        assert.equal(got.line, e.line);
        assert.equal(got.text, e.text);
        if (typeof e.reason === 'string') assert.equal(got.reason, e.reason);
        else assert.match(got.reason, e.reason);
      });
    });
  }

  test('policyFromTexts tags each invalid line with its list', () => {
    const p = policyFromTexts({ deny: 'a.*.com', allow: 'ok.example.com', always: '# nothing\n10.0.0.1' });
    assert.deepEqual(p.allow, ['ok.example.com']);
    assert.deepEqual(
      p.invalid.map((i) => [i.list, i.line]),
      [
        ['deny', 1],
        ['always', 2],
      ],
    );
  });

  test('the empty policy is empty and frozen', () => {
    assert.deepEqual(EMPTY_POLICY, { deny: [], allow: [], always: [], invalid: [], unreadable: [] });
    assert.ok(Object.isFrozen(EMPTY_POLICY) && Object.isFrozen(EMPTY_POLICY.deny));
  });
});

describe('matchPattern', () => {
  const cases: Array<{ name: string; hostname: string; pattern: string; expected: boolean }> = [
    {
      name: 'an exact pattern matches the same name',
      hostname: 'app.example.com',
      pattern: 'app.example.com',
      expected: true,
    },
    {
      name: 'an exact pattern does not match a subdomain',
      hostname: 'x.app.example.com',
      pattern: 'app.example.com',
      expected: false,
    },
    {
      name: 'an exact pattern does not match its parent',
      hostname: 'example.com',
      pattern: 'app.example.com',
      expected: false,
    },
    { name: 'a wildcard matches one label', hostname: 'a.example.com', pattern: '*.example.com', expected: true },
    {
      name: 'a wildcard does not match two labels',
      hostname: 'a.b.example.com',
      pattern: '*.example.com',
      expected: false,
    },
    { name: 'a wildcard does not match the apex', hostname: 'example.com', pattern: '*.example.com', expected: false },
    {
      name: 'a wildcard does not match a name that only ends with the same letters',
      hostname: 'aexample.com',
      pattern: '*.example.com',
      expected: false,
    },
    {
      name: 'a wildcard does not match a sibling domain',
      hostname: 'a.example.org',
      pattern: '*.example.com',
      expected: false,
    },
    {
      name: 'matching ignores the case of the hostname',
      hostname: 'A.Example.COM',
      pattern: '*.example.com',
      expected: true,
    },
    {
      name: 'matching ignores a trailing dot on the hostname',
      hostname: 'app.example.com.',
      pattern: 'app.example.com',
      expected: true,
    },
  ];
  for (const c of cases) {
    test(c.name, () => assert.equal(matchPattern(c.hostname, c.pattern), c.expected));
  }
});

describe('policyVerdict', () => {
  const cases: Array<{ name: string; hostname: string; policy: Policy; expected: PolicyVerdict }> = [
    {
      name: 'the empty policy allows every name',
      hostname: 'app.example.com',
      policy: EMPTY_POLICY,
      expected: { allowed: true },
    },
    {
      name: 'a deny match refuses with the pattern',
      hostname: 'app.example.com',
      policy: policy({ deny: ['*.example.com'] }),
      expected: { allowed: false, verdict: 'denied', pattern: '*.example.com', message: 'denied by *.example.com' },
    },
    {
      name: 'deny beats allow',
      hostname: 'app.example.com',
      policy: policy({ deny: ['app.example.com'], allow: ['*.example.com'] }),
      expected: { allowed: false, verdict: 'denied', pattern: 'app.example.com', message: 'denied by app.example.com' },
    },
    {
      name: 'deny beats always',
      hostname: 'app.example.com',
      policy: policy({ deny: ['*.example.com'], always: ['app.example.com'] }),
      expected: { allowed: false, verdict: 'denied', pattern: '*.example.com', message: 'denied by *.example.com' },
    },
    {
      name: 'the first matching deny pattern is named',
      hostname: 'app.example.com',
      policy: policy({ deny: ['other.example.com', 'app.example.com', '*.example.com'] }),
      expected: { allowed: false, verdict: 'denied', pattern: 'app.example.com', message: 'denied by app.example.com' },
    },
    {
      name: 'a deny list that does not match allows',
      hostname: 'app.example.org',
      policy: policy({ deny: ['*.example.com'] }),
      expected: { allowed: true },
    },
    {
      name: 'an empty allow list allows every name',
      hostname: 'app.example.org',
      policy: policy({ allow: [] }),
      expected: { allowed: true },
    },
    {
      name: 'a non-empty allow list allows a match',
      hostname: 'a.example.com',
      policy: policy({ allow: ['*.example.com'] }),
      expected: { allowed: true },
    },
    {
      name: 'a non-empty allow list refuses a name it does not match',
      hostname: 'a.example.org',
      policy: policy({ allow: ['*.example.com'] }),
      expected: { allowed: false, verdict: 'not-allowed', message: 'not on the allow list' },
    },
    {
      name: 'an allow wildcard does not reach two labels down',
      hostname: 'a.b.example.com',
      policy: policy({ allow: ['*.example.com'] }),
      expected: { allowed: false, verdict: 'not-allowed', message: 'not on the allow list' },
    },
    {
      name: 'an always name is allowed beyond the allow list',
      hostname: 'status.example.org',
      policy: policy({ allow: ['*.example.com'], always: ['status.example.org'] }),
      expected: { allowed: true },
    },
    {
      name: 'an always wildcard exempts matching names from the allow list',
      hostname: 'x.example.org',
      policy: policy({ allow: ['*.example.com'], always: ['*.example.org'] }),
      expected: { allowed: true },
    },
  ];
  for (const c of cases) {
    test(c.name, () => assert.deepEqual(policyVerdict(c.hostname, c.policy), c.expected));
  }
});

describe('applyPolicy', () => {
  const cases: Array<{
    name: string;
    declared: string[];
    policy: Policy;
    hostnames: string[];
    refused: Array<{ hostname: string; verdict: 'denied' | 'not-allowed'; message: string }>;
  }> = [
    {
      name: 'the empty policy passes the declared names sorted and unique',
      declared: ['b.example.com', 'a.example.com', 'b.example.com'],
      policy: EMPTY_POLICY,
      hostnames: ['a.example.com', 'b.example.com'],
      refused: [],
    },
    {
      name: 'denied and not-allowed names are refused with their messages',
      declared: ['a.example.com', 'bad.example.com', 'x.other.org'],
      policy: policy({ deny: ['bad.example.com'], allow: ['*.example.com'] }),
      hostnames: ['a.example.com'],
      refused: [
        { hostname: 'bad.example.com', verdict: 'denied', message: 'denied by bad.example.com' },
        { hostname: 'x.other.org', verdict: 'not-allowed', message: 'not on the allow list' },
      ],
    },
    {
      name: 'exact always names are added even when nothing declares them',
      declared: ['a.example.com'],
      policy: policy({ allow: ['*.example.com'], always: ['status.example.org'] }),
      hostnames: ['a.example.com', 'status.example.org'],
      refused: [],
    },
    {
      name: 'an always name that is also declared appears once',
      declared: ['status.example.org'],
      policy: policy({ always: ['status.example.org'] }),
      hostnames: ['status.example.org'],
      refused: [],
    },
    {
      name: 'a denied always name is refused, not added',
      declared: [],
      policy: policy({ deny: ['*.example.org'], always: ['status.example.org'] }),
      hostnames: [],
      refused: [{ hostname: 'status.example.org', verdict: 'denied', message: 'denied by *.example.org' }],
    },
    {
      name: 'an always wildcard adds no name by itself but lets declared matches through',
      declared: ['x.example.org', 'y.other.net'],
      policy: policy({ allow: ['*.example.com'], always: ['*.example.org'] }),
      hostnames: ['x.example.org'],
      refused: [{ hostname: 'y.other.net', verdict: 'not-allowed', message: 'not on the allow list' }],
    },
    {
      name: 'declared names differing only in case are one name',
      declared: ['App.Example.com', 'app.example.com'],
      policy: EMPTY_POLICY,
      hostnames: ['app.example.com'],
      refused: [],
    },
  ];
  for (const c of cases) {
    test(c.name, () =>
      assert.deepEqual(applyPolicy(c.declared, c.policy), { hostnames: c.hostnames, refused: c.refused }),
    );
  }
});
