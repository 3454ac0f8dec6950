/**
 * StoreHealth (src/engine/store-health.ts): what the certificate health check is told about the
 * store, as a table of store outcomes on a manual clock. Reads and writes are told apart, since a
 * store can serve reads while it refuses writes.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryCertificateStore } from '../../src/adapters/memory/memory-certificate-store.js';
import { DEFAULT_WRITE_FAULT_HOLD_MS, StoreHealth } from '../../src/engine/store-health.js';
import { ConsulAcmeError } from '../../src/errors.js';
import { silentLogger } from '../../src/logging.js';
import { ManualClock } from '../../src/ports/clock.js';

const refused = new ConsulAcmeError('STORE_UNAVAILABLE', 'write secret/data/fabio/certs/a: Vault is sealed', {
  retryable: true,
});

function storeHealth(): { health: StoreHealth; clock: ManualClock } {
  const clock = new ManualClock();
  const health = new StoreHealth({ store: new MemoryCertificateStore(), clock, logger: silentLogger() });
  return { health, clock };
}

describe('store health', () => {
  test('a failed read is cleared by the next read that succeeds', () => {
    const { health } = storeHealth();
    health.failed(refused, 'read');
    assert.match(health.state().error ?? '', /STORE_UNAVAILABLE/);
    health.succeeded('read');
    assert.equal(health.state().error, undefined);
  });

  test('a failed write is not cleared by reads that succeed, only by a write that succeeds', () => {
    const { health, clock } = storeHealth();
    health.failed(refused, 'write');
    const since = health.state().failingSince;
    clock.advance(10_000);
    health.succeeded('read');
    assert.match(health.state().error ?? '', /STORE_UNAVAILABLE/, 'a read does not clear it');
    clock.advance(20_000);
    health.failed(refused, 'write');
    health.succeeded('read');
    assert.equal(health.state().failingSince, since, 'failing since the first failure');
    health.succeeded('write');
    assert.equal(health.state().error, undefined);
  });

  test('a failed write nobody retried for the hold time no longer counts once a read succeeds', () => {
    const { health, clock } = storeHealth();
    health.failed(refused, 'write');
    clock.advance(DEFAULT_WRITE_FAULT_HOLD_MS - 1);
    health.succeeded('read');
    assert.notEqual(health.state().error, undefined, 'still held just before the hold time');
    clock.advance(1);
    health.succeeded('read');
    assert.equal(health.state().error, undefined);
  });

  test('errors that are not store faults (a conflict is an answer) do not count', () => {
    const { health } = storeHealth();
    health.failed(new ConsulAcmeError('STORE_CONFLICT', 'check-and-set expected version 1'), 'write');
    assert.equal(health.state().error, undefined);
  });
});
