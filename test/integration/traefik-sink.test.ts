/**
 * The Traefik file-provider sink on real files. Traefik is not installable here, so the dynamic
 * file is read as Traefik reads it: parsed with a real YAML parser and checked against the
 * structure Traefik documents (`tls.certificates[]` of `certFile` and `keyFile`, nothing else),
 * and every file it lists must exist and hold a certificate and the key that goes with it.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { promises as fs, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { before, describe, it } from 'node:test';
import { parse } from 'yaml';
import type { CertificateData } from '../../src/domain/certificate.js';
import { silentLogger } from '../../src/logging.js';
import { TRAEFIK_CERTS_FOLDER, TRAEFIK_DYNAMIC_FILE, TraefikSink } from '../../src/sinks/traefik-sink.js';
import { makeCertificateData } from '../support/certs.js';
import { removeOnExit } from '../support/processes.js';
import { readTraefikDynamicFile } from '../support/traefik.js';
import { splitPem } from '../support/x509.js';

const A = 'a.traefik.test';
const B = 'b.traefik.test';

function serialOf(certificate: CertificateData): string {
  return new X509Certificate(splitPem(certificate.certPem)[0]!.raw).serialNumber.toUpperCase();
}

async function filesUnder(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) found.push(...(await filesUnder(path)));
    else found.push(path);
  }
  return found.sort();
}

describe('Traefik file-provider sink', () => {
  let dir: string;
  let sink: TraefikSink;
  let a1: CertificateData;

  before(async () => {
    dir = await fs.mkdtemp(join(tmpdir(), 'traefik-sink-'));
    removeOnExit(dir);
    sink = new TraefikSink({ directory: dir, logger: silentLogger() });
    a1 = await makeCertificateData({ hostname: A, otherHostnames: [`www.${A}`] });
  });

  it('a new name gets its files and an entry in the dynamic file, in the schema Traefik documents', async () => {
    await sink.apply({ kind: 'stored', certificate: a1, reason: 'obtained' });
    const listed = await readTraefikDynamicFile(join(dir, TRAEFIK_DYNAMIC_FILE));
    assert.deepEqual(
      listed.map((l) => [l.hostname, l.serial]),
      [[A, serialOf(a1)]],
    );
    assert.equal(dirname(listed[0]!.certFile), join(dir, TRAEFIK_CERTS_FOLDER, A));
    assert.equal(splitPem(readFileSync(listed[0]!.certFile, 'utf8')).length, 2, 'leaf and chain');
  });

  it('a renewal gets new file paths and a rewritten dynamic file; the superseded files are removed', async () => {
    const [before] = await readTraefikDynamicFile(sink.dynamicFile);
    const a2 = await makeCertificateData({ hostname: A, otherHostnames: [`www.${A}`], keyType: 'rsa-2048' });
    await sink.apply({ kind: 'stored', certificate: a2, reason: 'renewed' });
    const [after] = await readTraefikDynamicFile(sink.dynamicFile);
    assert.equal(after!.serial, serialOf(a2));
    assert.notEqual(after!.certFile, before!.certFile, 'Traefik watches the dynamic file: new paths make it reload');
    assert.notEqual(after!.keyFile, before!.keyFile);
    assert.deepEqual(await filesUnder(join(dir, TRAEFIK_CERTS_FOLDER)), [after!.certFile, after!.keyFile].sort());
  });

  it('a sink started later keeps the names already listed when it adds one', async () => {
    const restarted = new TraefikSink({ directory: dir, logger: silentLogger() });
    const b = await makeCertificateData({ hostname: B });
    await restarted.apply({ kind: 'stored', certificate: b, reason: 'obtained' });
    const listed = await readTraefikDynamicFile(sink.dynamicFile);
    assert.deepEqual(
      listed.map((l) => l.hostname),
      [A, B],
    );
  });

  it('a retired name leaves the dynamic file and its folder is removed', async () => {
    await sink.apply({ kind: 'removed', hostname: B });
    assert.deepEqual(
      (await readTraefikDynamicFile(sink.dynamicFile)).map((l) => l.hostname),
      [A],
    );
    await assert.rejects(fs.access(join(dir, TRAEFIK_CERTS_FOLDER, B)));
  });

  it('a re-sync drops names the store no longer holds, and files left by a crash', async () => {
    await fs.writeFile(join(dir, TRAEFIK_CERTS_FOLDER, A, 'left-by-a-crash.crt.tmp-0123456789ab'), 'x');
    await fs.mkdir(join(dir, TRAEFIK_CERTS_FOLDER, 'stale.traefik.test'));
    await fs.writeFile(join(dir, `${TRAEFIK_DYNAMIC_FILE}.tmp-0123456789ab`), 'half a file');
    const b = await makeCertificateData({ hostname: B });
    await sink.resync({ certificates: [b], unreadable: [] });
    const listed = await readTraefikDynamicFile(sink.dynamicFile);
    assert.deepEqual(
      listed.map((l) => [l.hostname, l.serial]),
      [[B, serialOf(b)]],
    );
    assert.deepEqual(
      await filesUnder(join(dir, TRAEFIK_CERTS_FOLDER)),
      [listed[0]!.certFile, listed[0]!.keyFile].sort(),
    );
    assert.deepEqual((await fs.readdir(dir)).sort(), [TRAEFIK_CERTS_FOLDER, TRAEFIK_DYNAMIC_FILE]);
  });

  it('the dynamic file is replaced whole: a reader never sees half of it', async () => {
    const versions = await Promise.all(
      Array.from({ length: 8 }, (_, i) => makeCertificateData({ hostname: i % 2 ? A : B })),
    );
    let reads = 0;
    let stop = false;
    const reader = (async () => {
      while (!stop) {
        const document = parse(await fs.readFile(sink.dynamicFile, 'utf8')) as { tls: { certificates: unknown[] } };
        assert.ok(Array.isArray(document.tls.certificates), `a whole dynamic file (read ${reads})`);
        reads += 1;
        await new Promise((r) => setImmediate(r));
      }
    })();
    for (const certificate of versions) {
      const before = readFileSync(sink.dynamicFile, 'utf8');
      const opened = await fs.open(sink.dynamicFile, 'r');
      try {
        await sink.apply({ kind: 'stored', certificate, reason: 'renewed' });
        assert.equal(
          await opened.readFile('utf8'),
          before,
          'the previous version is untouched: renamed over, not rewritten',
        );
      } finally {
        await opened.close();
      }
    }
    stop = true;
    await reader;
    assert.ok(reads > 0);
    const listed = await readTraefikDynamicFile(sink.dynamicFile);
    assert.deepEqual(
      listed.map((l) => l.serial),
      [serialOf(versions[7]!), serialOf(versions[6]!)],
    );
  });

  it('an identical re-sync rewrites nothing, so Traefik is not woken for nothing', async () => {
    const listed = await readTraefikDynamicFile(sink.dynamicFile);
    const store = await Promise.all(
      listed.map(async (l) => ({
        hostname: l.hostname,
        certPem: readFileSync(l.certFile, 'utf8'),
        keyPem: readFileSync(l.keyFile, 'utf8'),
      })),
    );
    const certificates = store.map((s) => ({ ...a1, ...s, hostnames: [s.hostname] }));
    const before = statSync(sink.dynamicFile).mtimeMs;
    const opened = await fs.open(sink.dynamicFile, 'r');
    try {
      await sink.resync({ certificates, unreadable: [] });
      assert.equal((await opened.stat()).nlink, 1, 'the file read before is still the one in place');
    } finally {
      await opened.close();
    }
    assert.equal(statSync(sink.dynamicFile).mtimeMs, before);
  });
});
