/**
 * The settings of the CAA check and the exact-set budget: what they parse to, what they refuse,
 * and the rules that involve other settings.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';

const noFiles = {
  readFile: (p: string): string => {
    throw new Error(`ENOENT: ${p}`);
  },
  isReadable: () => true,
};

function problemsOf(env: Record<string, string>): string[] {
  try {
    loadConfig({ env, ...noFiles });
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    return [...err.problems];
  }
  return [];
}

describe('CONSUL_ACME_CAA_IDENTITIES', () => {
  test('unset, it is left to the directory (the service derives letsencrypt.org for Let\u2019s Encrypt)', () => {
    assert.equal(loadConfig({ env: {}, ...noFiles }).caaIdentities, undefined);
  });

  test('a comma-separated list is read as issuer domain names, spaces trimmed', () => {
    const config = loadConfig({ env: { CONSUL_ACME_CAA_IDENTITIES: 'letsencrypt.org, pki.example.org' }, ...noFiles });
    assert.deepEqual(config.caaIdentities, ['letsencrypt.org', 'pki.example.org']);
  });

  test('off switches the check off', () => {
    assert.equal(loadConfig({ env: { CONSUL_ACME_CAA_IDENTITIES: 'off' }, ...noFiles }).caaIdentities, 'off');
  });

  const refused: Array<{ name: string; value: string; problem: RegExp }> = [
    {
      name: 'a URL is not an issuer domain name',
      value: 'https://letsencrypt.org',
      problem: /CONSUL_ACME_CAA_IDENTITIES "https:\/\/letsencrypt\.org" is not an issuer domain name/,
    },
    {
      name: 'a single label is not an issuer domain name',
      value: 'letsencrypt',
      problem: /"letsencrypt" is not an issuer domain name/,
    },
    {
      name: 'a list of nothing but commas names no CA',
      value: ', ,',
      problem: /CONSUL_ACME_CAA_IDENTITIES must be issuer domain names .* or off/,
    },
  ];
  for (const c of refused) {
    test(c.name, () => {
      const problems = problemsOf({ CONSUL_ACME_CAA_IDENTITIES: c.value });
      assert.equal(problems.length, 1, problems.join('\n'));
      assert.match(problems[0]!, c.problem);
    });
  }

  test('set while the pre-flight check is off, it is refused: the CAA check is part of the pre-flight', () => {
    const problems = problemsOf({ CONSUL_ACME_CAA_IDENTITIES: 'letsencrypt.org', CONSUL_ACME_PREFLIGHT: 'false' });
    assert.deepEqual(problems, [
      'CONSUL_ACME_CAA_IDENTITIES is set but CONSUL_ACME_PREFLIGHT is false: the CAA check is part of the pre-flight check (set CONSUL_ACME_CAA_IDENTITIES=off, or switch the pre-flight on)',
    ]);
    assert.deepEqual(problemsOf({ CONSUL_ACME_CAA_IDENTITIES: 'off', CONSUL_ACME_PREFLIGHT: 'false' }), []);
  });
});

describe('CONSUL_ACME_BUDGET_EXACT_SET', () => {
  test('defaults to 5 orders per exact set per 7 days, as Let\u2019s Encrypt', () => {
    assert.deepEqual(loadConfig({ env: {}, ...noFiles }).budgetExactSet, { limit: 5, windowMs: 7 * 86_400_000 });
  });

  test('takes <count>/<window> or off, like the other budgets', () => {
    assert.deepEqual(loadConfig({ env: { CONSUL_ACME_BUDGET_EXACT_SET: '2/1d' }, ...noFiles }).budgetExactSet, {
      limit: 2,
      windowMs: 86_400_000,
    });
    assert.equal(loadConfig({ env: { CONSUL_ACME_BUDGET_EXACT_SET: 'off' }, ...noFiles }).budgetExactSet, 'off');
    assert.match(problemsOf({ CONSUL_ACME_BUDGET_EXACT_SET: 'five' })[0]!, /must be "<count>\/<window>"/);
  });

  test('a budget window longer than the ledger keeps events is refused, for every budget', () => {
    const problems = problemsOf({
      CONSUL_ACME_BUDGET_EXACT_SET: '5/14d',
      CONSUL_ACME_BUDGET_REGISTERED_DOMAIN: '50/8d',
    });
    assert.deepEqual(problems, [
      'CONSUL_ACME_BUDGET_REGISTERED_DOMAIN has a window longer than 7d, but the shared budget ledger forgets events after 7 days, so the budget would not hold',
      'CONSUL_ACME_BUDGET_EXACT_SET has a window longer than 7d, but the shared budget ledger forgets events after 7 days, so the budget would not hold',
    ]);
    assert.deepEqual(problemsOf({ CONSUL_ACME_BUDGET_EXACT_SET: '5/7d' }), []);
  });
});
