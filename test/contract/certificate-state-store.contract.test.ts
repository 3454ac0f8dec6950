/**
 * One set of cases for every CertificateStateStore: MemoryCertificateStateStore and
 * ConsulCertificateStateStore (real Consul 1.8.7). Consul-only cases: two instances share the
 * state, and a value that is not a state we wrote reads as undefined (it is only a hint).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { createConsulClient, type Consul } from '../../src/adapters/consul/consul-client.js';
import { ConsulCertificateStateStore } from '../../src/adapters/consul/consul-certificate-state-store.js';
import { MemoryCertificateStateStore } from '../../src/adapters/memory/memory-certificate-state-store.js';
import { ConsulAcmeError } from '../../src/errors.js';
import type { CertificateState, CertificateStateStore } from '../../src/ports/certificate-state-store.js';
import { startConsul, type ConsulInstance } from '../support/consul.js';

interface Subject {
  name: string;
  setup(): Promise<void>;
  teardown(): Promise<void>;
  create(): CertificateStateStore;
  /** A store nobody else uses. */
  isolated(): CertificateStateStore;
  /** Writes `text` where the store keeps hostname's state, as another writer could; undefined when the store has no such place. */
  writeRaw?: (hostname: string, text: string, flags?: number) => Promise<void>;
  /** The stored value's flags (Consul), undefined when there is none. */
  readFlags?: (hostname: string) => Promise<number | undefined>;
}

let consulServer: ConsulInstance | undefined;
const clients: Consul[] = [];
const prefix = `consul-acme-test/${randomUUID()}/state/`;

function consulClient(): Consul {
  if (!consulServer) throw new Error('consul not started');
  const client = createConsulClient({ address: consulServer.address });
  clients.push(client);
  return client;
}

function newHostname(): string {
  return `${randomUUID().slice(0, 8)}.example.test`;
}

function failingState(hostname: string): CertificateState {
  return {
    hostname,
    consecutiveFailures: 3,
    lastAttemptAt: new Date('2030-01-02T03:04:05.678Z'),
    lastError: 'ACME_RATE_LIMITED: too many certificates (Retry-After 3600 s)',
    nextAttemptAt: new Date('2030-01-02T04:04:05.678Z'),
  };
}

const subjects: Subject[] = [
  {
    name: 'MemoryCertificateStateStore',
    setup: async () => undefined,
    teardown: async () => undefined,
    create: () => new MemoryCertificateStateStore(),
    isolated: () => new MemoryCertificateStateStore(),
  },
  {
    name: 'ConsulCertificateStateStore',
    setup: async () => {
      consulServer = await startConsul();
    },
    teardown: async () => {
      for (const c of clients) c.destroy();
      await consulServer?.stop();
    },
    create: () => new ConsulCertificateStateStore({ consul: consulClient(), prefix }),
    isolated: () =>
      new ConsulCertificateStateStore({ consul: consulClient(), prefix: `consul-acme-test/${randomUUID()}/state/` }),
    writeRaw: async (hostname, text, flags) => {
      const query = flags === undefined ? '' : `?flags=${flags}`;
      const res = await fetch(`${consulServer!.address}/v1/kv/${prefix}${hostname}${query}`, {
        method: 'PUT',
        body: text,
      });
      assert.equal(res.status, 200, `writing ${prefix}${hostname}: ${await res.text()}`);
    },
    readFlags: async (hostname) => {
      const res = await fetch(`${consulServer!.address}/v1/kv/${prefix}${hostname}`);
      return res.status === 404 ? undefined : ((await res.json()) as Array<{ Flags: number }>)[0]?.Flags;
    },
  },
];

for (const subject of subjects) {
  describe(`CertificateStateStore contract: ${subject.name}`, () => {
    before(() => subject.setup());
    after(() => subject.teardown());

    it('resolves undefined for a certificate it never stored', async () => {
      const store = subject.create();
      assert.equal(await store.get(newHostname()), undefined);
    });

    it('returns what was put, dates included, to the millisecond', async () => {
      const store = subject.create();
      const state = failingState(newHostname());
      await store.put(state);
      const read = await store.get(state.hostname);
      assert.deepEqual(read, state);
      assert.ok(
        read?.nextAttemptAt instanceof Date && read.lastAttemptAt instanceof Date,
        'dates come back as Date objects',
      );
    });

    it('keeps absent optional fields absent', async () => {
      const store = subject.create();
      const state: CertificateState = {
        hostname: newHostname(),
        consecutiveFailures: 0,
        lastAttemptAt: undefined,
        lastError: undefined,
        nextAttemptAt: undefined,
      };
      await store.put(state);
      assert.deepEqual(await store.get(state.hostname), state);
    });

    it('lets a second put overwrite the first', async () => {
      const store = subject.create();
      const first = failingState(newHostname());
      await store.put(first);
      const second: CertificateState = {
        ...first,
        consecutiveFailures: 4,
        lastError: 'ACME_CONNECTION: refused',
        nextAttemptAt: new Date('2030-01-03T00:00:00.000Z'),
      };
      await store.put(second);
      assert.deepEqual(await store.get(first.hostname), second);
    });

    it('keeps each certificate apart', async () => {
      const store = subject.create();
      const a = failingState(newHostname());
      const b: CertificateState = { ...failingState(newHostname()), consecutiveFailures: 1 };
      await store.put(a);
      await store.put(b);
      assert.equal((await store.get(a.hostname))?.consecutiveFailures, 3);
      assert.equal((await store.get(b.hostname))?.consecutiveFailures, 1);
    });

    it('forgets a deleted certificate and leaves the others', async () => {
      const store = subject.create();
      const gone = failingState(newHostname());
      const kept = failingState(newHostname());
      await store.put(gone);
      await store.put(kept);
      await store.delete(gone.hostname);
      assert.equal(await store.get(gone.hostname), undefined);
      assert.deepEqual(await store.get(kept.hostname), kept);
    });

    it('lists the hostnames that have a state, sorted, and none when there is none', async () => {
      const store = subject.isolated();
      assert.deepEqual(await store.list(), []);
      const names = ['b.example.test', 'a.example.test', 'c.example.test'];
      for (const hostname of names) await store.put(failingState(hostname));
      assert.deepEqual(await store.list(), [...names].sort());
      await store.delete('b.example.test');
      assert.deepEqual(await store.list(), ['a.example.test', 'c.example.test']);
    });

    it('treats deleting an unknown certificate as a no-op', async () => {
      const store = subject.create();
      await store.delete(newHostname());
    });

    it('does not hand out its own copy: changing a returned state changes nothing stored', async () => {
      const store = subject.create();
      const state = failingState(newHostname());
      await store.put(state);
      const read = await store.get(state.hostname);
      assert.ok(read);
      read.consecutiveFailures = 99;
      state.consecutiveFailures = 98;
      assert.equal((await store.get(state.hostname))?.consecutiveFailures, 3);
    });

    if (subject.writeRaw) {
      const writeRaw = subject.writeRaw;
      const unparseable: Array<[string, string]> = [
        ['text that is not JSON', 'not json at all'],
        ['an empty value', ''],
        ['JSON null', 'null'],
        ['a JSON number', '42'],
        ['a JSON array', '[1,2]'],
        ['an object without a failure count', '{"last_error":"x"}'],
        ['a failure count that is not a number', '{"consecutive_failures":"3"}'],
      ];
      for (const [what, text] of unparseable) {
        it(`resolves undefined, without throwing, for ${what}`, async () => {
          const store = subject.create();
          const hostname = newHostname();
          await writeRaw(hostname, text);
          assert.equal(await store.get(hostname), undefined);
        });
      }

      it('drops a date it cannot parse but keeps the rest of the state', async () => {
        const store = subject.create();
        const hostname = newHostname();
        await writeRaw(
          hostname,
          JSON.stringify({
            consecutive_failures: 2,
            last_attempt_at: 'yesterday',
            next_attempt_at: '2030-01-02T04:04:05.678Z',
          }),
        );
        assert.deepEqual(await store.get(hostname), {
          hostname,
          consecutiveFailures: 2,
          lastAttemptAt: undefined,
          lastError: undefined,
          nextAttemptAt: new Date('2030-01-02T04:04:05.678Z'),
        });
      });

      it('lists a state it cannot parse, so that it can be deleted', async () => {
        const store = subject.create();
        const hostname = newHostname();
        await writeRaw(hostname, 'not json at all');
        assert.ok((await store.list()).includes(hostname));
        await store.delete(hostname);
        assert.ok(!(await store.list()).includes(hostname));
      });

      it("writes its format into the key's flags (1), and reads a value without flags as format 1", async () => {
        const store = subject.create();
        const state = failingState(newHostname());
        await store.put(state);
        assert.equal(await subject.readFlags?.(state.hostname), 1);
        await writeRaw(state.hostname, JSON.stringify({ consecutive_failures: 2 }));
        assert.equal((await store.get(state.hostname))?.consecutiveFailures, 2);
      });

      it('leaves a state a newer release wrote alone: get, put and delete reject with FORMAT_NEWER', async () => {
        const store = subject.create();
        const hostname = newHostname();
        await writeRaw(hostname, JSON.stringify({ consecutive_failures: 1, format_2_field: true }), 2);
        const newer = (err: unknown): boolean => err instanceof ConsulAcmeError && err.code === 'FORMAT_NEWER';
        await assert.rejects(store.get(hostname), newer);
        await assert.rejects(store.put(failingState(hostname)), newer);
        await assert.rejects(store.delete(hostname), newer);
        assert.equal(await subject.readFlags?.(hostname), 2, 'untouched');
      });

      it('shares the state between two instances', async () => {
        const [one, two] = [subject.create(), subject.create()];
        const state = failingState(newHostname());
        await one.put(state);
        assert.deepEqual(await two.get(state.hostname), state);
        await two.delete(state.hostname);
        assert.equal(await one.get(state.hostname), undefined);
      });
    }
  });
}
