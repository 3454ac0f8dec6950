/**
 * The engine's desired set (src/engine/desired-set.ts): which names are managed when the policy
 * is read before the first catalog snapshot, as it is at every start.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { policyFromTexts } from '../../src/domain/policy.js';
import { DesiredSet } from '../../src/engine/desired-set.js';

const NOW = new Date('2026-01-01T00:00:00Z');

function desiredSet(): DesiredSet {
  return new DesiredSet({
    tags: { tagPrefix: 'consul-acme', fabioTagPrefix: 'urlprefix-', requireEnableTag: false },
    ownServiceNames: ['consul-acme'],
    extraHostnames: ['extra.example.test'],
    directoryUrl: 'https://acme.test/directory',
    keyType: 'ec-p256',
    hasCertificate: () => false,
  });
}

describe('the desired set at start (policy first, then the first snapshot)', () => {
  test('a name on the always list that no service declares is managed from the first snapshot', () => {
    const set = desiredSet();
    set.applyPolicy(policyFromTexts({ always: 'always.example.test\n' }), NOW);
    const change = set.applySnapshot({ web: ['urlprefix-app.example.test/'] }, NOW);
    assert.deepEqual(change.added, ['always.example.test', 'app.example.test', 'extra.example.test']);
    assert.equal(set.isManaged('always.example.test'), true);
  });

  test('an always name the deny list refuses is refused, not managed', () => {
    const set = desiredSet();
    set.applyPolicy(policyFromTexts({ always: 'always.example.test\n', deny: 'always.example.test\n' }), NOW);
    const change = set.applySnapshot({}, NOW);
    assert.deepEqual(change.added, ['extra.example.test']);
    assert.equal(set.refusal('always.example.test')?.verdict, 'denied');
  });
});
