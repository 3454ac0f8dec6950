/**
 * One set of cases for every CertificateSink: memory, HAProxy files only, HAProxy with its runtime
 * API (a real HAProxy 2.6), Traefik's file provider, and the command hook (a shell command keeping
 * a folder of certificates, as an nginx hook would). Each is read back the way its consumer reads
 * it: what HAProxy serves and lists, what Traefik's dynamic file lists, what the hook's folder holds.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, relative } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse } from 'yaml';
import { MemoryCertificateSink } from '../../src/adapters/memory/memory-certificate-sink.js';
import type { CertificateData } from '../../src/domain/certificate.js';
import { silentLogger } from '../../src/logging.js';
import type { CertificateSink } from '../../src/ports/certificate-sink.js';
import { HaproxyRuntime } from '../../src/sinks/haproxy-runtime.js';
import { crtListPaths, HaproxySink } from '../../src/sinks/haproxy-sink.js';
import { HookSink } from '../../src/sinks/hook-sink.js';
import { TraefikSink, type TraefikDynamicConfiguration } from '../../src/sinks/traefik-sink.js';
import { makeCertificateData } from '../support/certs.js';
import { startHaproxy, type HaproxyInstance } from '../support/haproxy.js';
import { removeOnExit } from '../support/processes.js';

/** hostname → serial of the leaf the sink's consumer would use. */
type Held = Map<string, string>;

interface Harness {
  sink: CertificateSink;
  held(): Promise<Held>;
  cleanup(): Promise<void>;
}

function serialOf(pem: string): string {
  const block = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(pem)?.[0];
  assert.ok(block, 'a PEM certificate');
  return new X509Certificate(block).serialNumber.toUpperCase();
}

async function tempDir(prefix: string): Promise<string> {
  const dir = await fs.mkdtemp(join(tmpdir(), prefix));
  removeOnExit(dir);
  return dir;
}

async function haproxyFilesHeld(sink: HaproxySink): Promise<Held> {
  const held: Held = new Map();
  for (const path of crtListPaths(await fs.readFile(sink.crtListPath, 'utf8'))) {
    held.set(basename(path, '.pem'), serialOf(await fs.readFile(path, 'utf8')));
  }
  return held;
}

async function haproxyRuntimeHeld(haproxy: HaproxyInstance, sink: HaproxySink): Promise<Held> {
  const runtime = new HaproxyRuntime({ socketPath: haproxy.socketPath });
  const entries = await runtime.crtListEntries(sink.crtListPath);
  const held: Held = new Map();
  for (const { path } of entries) {
    assert.ok(!held.has(basename(path, '.pem')), `${path} is listed once`);
    const shown = await runtime.showCertificate(path);
    assert.ok(shown, `haproxy holds ${path}`);
    held.set(basename(path, '.pem'), shown.serial);
  }
  // A restart would read the files: they say the same.
  assert.deepEqual(await haproxyFilesHeld(sink), held, 'the files match what HAProxy serves');
  return held;
}

async function traefikHeld(sink: TraefikSink): Promise<Held> {
  const text = await fs.readFile(sink.dynamicFile, 'utf8').catch(() => 'tls: { certificates: [] }');
  const config = parse(text) as TraefikDynamicConfiguration;
  const held: Held = new Map();
  for (const entry of config.tls.certificates) {
    const hostname = relative(sink.certsDirectory, entry.certFile).split('/')[0]!;
    held.set(hostname, serialOf(await fs.readFile(entry.certFile, 'utf8')));
  }
  return held;
}

const HOOK_COMMAND = [
  'case "$CONSUL_ACME_REASON" in',
  '  retired) rm -f "$STATE/$CONSUL_ACME_HOSTNAME.pem" ;;',
  '  *) cp "$CONSUL_ACME_CERT_FILE" "$STATE/$CONSUL_ACME_HOSTNAME.pem" ;;',
  'esac',
].join('\n');

async function folderHeld(folder: string): Promise<Held> {
  const held: Held = new Map();
  for (const name of (await fs.readdir(folder)).sort()) {
    held.set(basename(name, '.pem'), serialOf(await fs.readFile(join(folder, name), 'utf8')));
  }
  return held;
}

const A = 'a.example.test';
const B = 'b.example.test';
const C = 'c.example.test';
const D = 'd.example.test';
const certs: Record<string, CertificateData> = {
  a1: await makeCertificateData({ hostname: A, otherHostnames: [`www.${A}`] }),
  a2: await makeCertificateData({ hostname: A, otherHostnames: [`www.${A}`], keyType: 'ec-p384' }),
  b: await makeCertificateData({ hostname: B, keyType: 'rsa-2048' }),
  c: await makeCertificateData({ hostname: C }),
  d: await makeCertificateData({ hostname: D }),
};
const serial = (c: CertificateData): string => serialOf(c.certPem);

let haproxy: HaproxyInstance;

const implementations: Array<[string, () => Promise<Harness>]> = [
  [
    'memory',
    async () => {
      const sink = new MemoryCertificateSink();
      return {
        sink,
        held: async () => new Map([...sink.held].map(([h, c]) => [h, serial(c)])),
        cleanup: async () => undefined,
      };
    },
  ],
  [
    'HAProxy, files only',
    async () => {
      const dir = await tempDir('haproxy-files-');
      const sink = new HaproxySink({
        directory: dir,
        crtListPath: join(dir, 'crt-list'),
        runtime: undefined,
        logger: silentLogger(),
      });
      return { sink, held: () => haproxyFilesHeld(sink), cleanup: async () => undefined };
    },
  ],
  [
    'HAProxy with its runtime API',
    async () => {
      const sink = new HaproxySink({
        directory: haproxy.certDir,
        crtListPath: haproxy.crtListPath,
        runtime: new HaproxyRuntime({ socketPath: haproxy.socketPath }),
        logger: silentLogger(),
      });
      // Start from what the previous case left: nothing.
      await sink.resync({ certificates: [], unreadable: [] });
      return { sink, held: () => haproxyRuntimeHeld(haproxy, sink), cleanup: async () => undefined };
    },
  ],
  [
    'Traefik file provider',
    async () => {
      const sink = new TraefikSink({ directory: await tempDir('traefik-'), logger: silentLogger() });
      return { sink, held: () => traefikHeld(sink), cleanup: async () => undefined };
    },
  ],
  [
    'command hook',
    async () => {
      const state = await tempDir('hook-state-');
      const sink = new HookSink({
        command: HOOK_COMMAND,
        timeoutMs: 10_000,
        logger: silentLogger(),
        environment: { ...process.env, STATE: state },
      });
      return { sink, held: () => folderHeld(state), cleanup: async () => undefined };
    },
  ],
];

before(async () => {
  haproxy = await startHaproxy();
});

after(async () => {
  await haproxy?.stop();
});

for (const [name, make] of implementations) {
  describe(`CertificateSink contract: ${name}`, () => {
    let h: Harness;
    before(async () => {
      h = await make();
    });
    after(async () => h?.cleanup());

    it('holds a certificate once it is applied', async () => {
      await h.sink.apply({ kind: 'stored', certificate: certs.a1!, reason: 'obtained' });
      await h.sink.apply({ kind: 'stored', certificate: certs.b!, reason: 'obtained' });
      assert.deepEqual(
        await h.held(),
        new Map([
          [A, serial(certs.a1!)],
          [B, serial(certs.b!)],
        ]),
      );
    });

    it('applying the same change again changes nothing', async () => {
      await h.sink.apply({ kind: 'stored', certificate: certs.a1!, reason: 'obtained' });
      assert.equal((await h.held()).get(A), serial(certs.a1!));
      assert.equal((await h.held()).size, 2);
    });

    it('a renewed certificate replaces the old one', async () => {
      await h.sink.apply({ kind: 'stored', certificate: certs.a2!, reason: 'renewed' });
      assert.equal((await h.held()).get(A), serial(certs.a2!));
      assert.equal((await h.held()).get(B), serial(certs.b!));
    });

    it('a removed name is no longer held, and removing it again is no error', async () => {
      await h.sink.apply({ kind: 'stored', certificate: certs.d!, reason: 'obtained' });
      await h.sink.apply({ kind: 'removed', hostname: D });
      await h.sink.apply({ kind: 'removed', hostname: D });
      assert.deepEqual([...(await h.held()).keys()].sort(), [A, B]);
    });

    it('a re-sync holds exactly the snapshot, keeping what it holds for unreadable names', async () => {
      await h.sink.apply({ kind: 'stored', certificate: certs.d!, reason: 'obtained' });
      await h.sink.apply({ kind: 'stored', certificate: certs.a1!, reason: 'renewed' });
      // Held: a1, b, d. The store now has a2 and c; b's record is unreadable; d is gone.
      await h.sink.resync({ certificates: [certs.a2!, certs.c!], unreadable: [B] });
      assert.deepEqual(
        await h.held(),
        new Map([
          [A, serial(certs.a2!)],
          [B, serial(certs.b!)],
          [C, serial(certs.c!)],
        ]),
      );
    });

    it('a second identical re-sync changes nothing', async () => {
      const before = await h.held();
      await h.sink.resync({ certificates: [certs.a2!, certs.c!], unreadable: [B] });
      assert.deepEqual(await h.held(), before);
    });

    it('an empty re-sync removes everything', async () => {
      await h.sink.resync({ certificates: [], unreadable: [] });
      assert.equal((await h.held()).size, 0);
    });
  });
}
