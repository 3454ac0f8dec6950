/**
 * The HAProxy sink against a real HAProxy 2.6 (started by test/support/haproxy.ts), checked the way
 * a client sees it: `openssl s_client -servername <name>` gets the certificate, and HAProxy's PID
 * never changes (no reload). Also: the files survive a restart, a stats socket that is absent gets
 * the files and then the retried push, transactions left open are handled, files are never half
 * written, and the runtime client names its failures.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { promises as fs, readFileSync, statSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { CertificateData } from '../../src/domain/certificate.js';
import { ConsulAcmeError } from '../../src/errors.js';
import { silentLogger } from '../../src/logging.js';
import { HaproxyRuntime } from '../../src/sinks/haproxy-runtime.js';
import { crtListPaths, HAPROXY_PEM_MODE, HaproxySink } from '../../src/sinks/haproxy-sink.js';
import { SinkRunner } from '../../src/sinks/sink-runner.js';
import { makeCertificateData } from '../support/certs.js';
import { HAPROXY_DEFAULT_NAME, haproxyCommand, startHaproxy, type HaproxyInstance } from '../support/haproxy.js';
import { removeOnExit } from '../support/processes.js';
import { waitFor } from '../support/wait.js';
import { keyMatches } from '../support/x509.js';

const NEW_HOST = 'new.haproxy.test';
const OTHER_HOST = 'other.haproxy.test';
const LATE_HOST = 'late.haproxy.test';

function serialOf(certificate: CertificateData): string {
  const block = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(certificate.certPem)![0];
  return new X509Certificate(block).serialNumber.toUpperCase();
}

async function servedSerial(haproxy: HaproxyInstance, servername: string): Promise<string> {
  return (await haproxy.servedCertificate(servername)).serialNumber.toUpperCase();
}

function isCode(code: string): (err: unknown) => boolean {
  return (err) => err instanceof ConsulAcmeError && err.code === code;
}

describe('HAProxy sink against a real HAProxy', () => {
  let haproxy: HaproxyInstance;
  let sink: HaproxySink;
  let pid: number;

  before(async () => {
    haproxy = await startHaproxy();
    pid = haproxy.pid;
    sink = new HaproxySink({
      directory: haproxy.certDir,
      crtListPath: haproxy.crtListPath,
      runtime: new HaproxyRuntime({ socketPath: haproxy.socketPath }),
      logger: silentLogger(),
    });
  });

  after(async () => {
    await haproxy?.stop();
  });

  it('a new name is served at once, from one combined PEM file listed in the crt-list, without a reload', async () => {
    assert.equal(
      (await haproxy.servedCertificate(NEW_HOST)).subject,
      `CN=${HAPROXY_DEFAULT_NAME}`,
      'before: the default certificate',
    );
    const certificate = await makeCertificateData({ hostname: NEW_HOST });
    await sink.apply({ kind: 'stored', certificate, reason: 'obtained' });

    assert.equal(await servedSerial(haproxy, NEW_HOST), serialOf(certificate));
    const path = sink.pemPath(NEW_HOST);
    const pem = readFileSync(path, 'utf8');
    assert.equal(statSync(path).mode & 0o777, HAPROXY_PEM_MODE, 'the PEM holds a key: owner only');
    assert.equal((pem.match(/BEGIN CERTIFICATE/g) ?? []).length, 2, 'leaf and chain');
    assert.match(pem, /-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----/, 'then the key');
    assert.doesNotMatch(pem, /\n\n/, 'no empty line (it would end a runtime API payload)');
    assert.ok(keyMatches(pem, pem.slice(pem.indexOf('-----BEGIN PRIVATE KEY'))));
    assert.deepEqual(crtListPaths(readFileSync(haproxy.crtListPath, 'utf8')), [path]);
    assert.equal(haproxy.pid, pid);
  });

  it('a renewal is served at once, and the crt-list keeps one line for the name', async () => {
    const renewed = await makeCertificateData({ hostname: NEW_HOST, keyType: 'rsa-2048' });
    await sink.apply({ kind: 'stored', certificate: renewed, reason: 'renewed' });
    assert.equal(await servedSerial(haproxy, NEW_HOST), serialOf(renewed));
    await sink.apply({ kind: 'stored', certificate: renewed, reason: 'renewed' });
    const listed = await haproxyCommand(haproxy.socketPath, `show ssl crt-list ${haproxy.crtListPath}`);
    assert.equal(listed.split('\n').filter((l) => l.startsWith(sink.pemPath(NEW_HOST))).length, 1, listed);
    assert.equal(haproxy.pid, pid);
  });

  it('a restarted HAProxy finds the same state in the files', async () => {
    const other = await makeCertificateData({ hostname: OTHER_HOST });
    await sink.apply({ kind: 'stored', certificate: other, reason: 'obtained' });
    const before = await servedSerial(haproxy, NEW_HOST);
    await haproxy.restart();
    assert.equal(await servedSerial(haproxy, NEW_HOST), before);
    assert.equal(await servedSerial(haproxy, OTHER_HOST), serialOf(other));
    pid = haproxy.pid;
  });

  it('a retired name is no longer served, its file and crt-list line are gone', async () => {
    await sink.apply({ kind: 'removed', hostname: OTHER_HOST });
    assert.equal((await haproxy.servedCertificate(OTHER_HOST)).subject, `CN=${HAPROXY_DEFAULT_NAME}`);
    await assert.rejects(fs.access(sink.pemPath(OTHER_HOST)));
    assert.deepEqual(crtListPaths(readFileSync(haproxy.crtListPath, 'utf8')), [sink.pemPath(NEW_HOST)]);
    assert.doesNotMatch(await haproxyCommand(haproxy.socketPath, 'show ssl cert'), new RegExp(OTHER_HOST));
    assert.equal(haproxy.pid, pid);
  });

  it('a re-sync removes names the store no longer holds and adds the missing ones, live', async () => {
    const late = await makeCertificateData({ hostname: LATE_HOST });
    await sink.resync({ certificates: [late], unreadable: [] });
    assert.equal(await servedSerial(haproxy, LATE_HOST), serialOf(late));
    assert.equal((await haproxy.servedCertificate(NEW_HOST)).subject, `CN=${HAPROXY_DEFAULT_NAME}`);
    assert.deepEqual(crtListPaths(readFileSync(haproxy.crtListPath, 'utf8')), [sink.pemPath(LATE_HOST)]);
    await assert.rejects(fs.access(sink.pemPath(NEW_HOST)));
    assert.equal(haproxy.pid, pid);
  });

  it('a re-sync never removes a file the crt-list did not name (a file the operator put beside them stays)', async () => {
    const foreign = join(haproxy.certDir, 'operator-owned.pem');
    await fs.writeFile(foreign, 'not ours');
    await sink.resync({ certificates: [], unreadable: [] });
    assert.equal(readFileSync(foreign, 'utf8'), 'not ours');
    await fs.rm(foreign);
  });

  it('an open transaction of ours (left by a crash) is aborted; one that is not ours fails the push, named', async () => {
    const certificate = await makeCertificateData({ hostname: NEW_HOST });
    const runtime = new HaproxyRuntime({ socketPath: haproxy.socketPath });
    // A crash between `set` and `commit` of another of our certificates.
    const stray = sink.pemPath('stray.haproxy.test');
    await runtime.newCertificate(stray);
    await runtime.setCertificate(stray, (await makeCertificateData({ hostname: 'stray.haproxy.test' })).certPem);
    await sink.apply({ kind: 'stored', certificate, reason: 'obtained' });
    assert.equal(await servedSerial(haproxy, NEW_HOST), serialOf(certificate));
    assert.equal((await runtime.listCertificates()).transaction, undefined);

    // Someone else's transaction on the default certificate.
    const defaultPem = join(haproxy.certDir, '..', 'default.pem');
    await runtime.setCertificate(defaultPem, readFileSync(defaultPem, 'utf8'));
    const renewed = await makeCertificateData({ hostname: NEW_HOST });
    await assert.rejects(sink.apply({ kind: 'stored', certificate: renewed, reason: 'renewed' }), (err: unknown) => {
      assert.ok(isCode('HAPROXY_REFUSED')(err));
      assert.match((err as Error).message, /open certificate transaction for .*default\.pem/);
      return true;
    });
    assert.equal(await servedSerial(haproxy, NEW_HOST), serialOf(certificate), 'still the previous certificate');
    await runtime.abortCertificate(defaultPem);
    await sink.apply({ kind: 'stored', certificate: renewed, reason: 'renewed' });
    assert.equal(await servedSerial(haproxy, NEW_HOST), serialOf(renewed));
    await runtime.deleteCertificate(stray);
    assert.equal(haproxy.pid, pid);
  });

  it('the PEM file and the crt-list are replaced whole: a reader never sees half a file', async () => {
    const path = sink.pemPath(NEW_HOST);
    const versions = await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        makeCertificateData({ hostname: NEW_HOST, keyType: i % 2 ? 'rsa-2048' : 'ec-p256' }),
      ),
    );
    let reads = 0;
    let stop = false;
    const reader = (async () => {
      while (!stop) {
        const pem = await fs.readFile(path, 'utf8');
        const list = await fs.readFile(haproxy.crtListPath, 'utf8');
        assert.ok(keyMatches(pem, pem), `a whole PEM file (read ${reads})`);
        assert.deepEqual(crtListPaths(list), [path], `a whole crt-list (read ${reads})`);
        reads += 1;
        await new Promise((r) => setImmediate(r));
      }
    })();
    for (const certificate of versions) {
      // A reader that opened the file before the change still reads the whole previous version:
      // the new one was renamed into place, never written over it.
      const before = readFileSync(path, 'utf8');
      const opened = await fs.open(path, 'r');
      try {
        await sink.apply({ kind: 'stored', certificate, reason: 'renewed' });
        assert.equal(await opened.readFile('utf8'), before);
      } finally {
        await opened.close();
      }
    }
    stop = true;
    await reader;
    assert.ok(reads > 0);
    assert.equal(await servedSerial(haproxy, NEW_HOST), serialOf(versions.at(-1)!));
  });
});

describe('HAProxy sink when the stats socket is absent, then back', () => {
  let haproxy: HaproxyInstance;
  let link: string;

  before(async () => {
    haproxy = await startHaproxy();
    link = join(haproxy.certDir, '..', 'later.sock');
  });

  after(async () => {
    await haproxy?.stop();
  });

  it('writes the files, fails the push as HAPROXY_UNREACHABLE, and the runner pushes it once the socket is there', async () => {
    const sink = new HaproxySink({
      directory: haproxy.certDir,
      crtListPath: haproxy.crtListPath,
      runtime: new HaproxyRuntime({ socketPath: link }),
      logger: silentLogger(),
    });
    const certificate = await makeCertificateData({ hostname: NEW_HOST });
    await assert.rejects(
      sink.apply({ kind: 'stored', certificate, reason: 'obtained' }),
      isCode('HAPROXY_UNREACHABLE'),
    );
    assert.deepEqual(crtListPaths(readFileSync(haproxy.crtListPath, 'utf8')), [sink.pemPath(NEW_HOST)], 'files first');
    assert.equal((await haproxy.servedCertificate(NEW_HOST)).subject, `CN=${HAPROXY_DEFAULT_NAME}`, 'not pushed');

    const outcomes: string[] = [];
    const runner = new SinkRunner({
      sinks: [sink],
      snapshot: async () => ({ certificates: [certificate], unreadable: [] }),
      logger: silentLogger(),
      retryScheduleMs: [100, 200, 400],
      onApplied: (_sink, outcome) => outcomes.push(outcome),
    });
    runner.notify({ kind: 'stored', certificate, reason: 'obtained' });
    const failing = await waitFor('the runner to report the sink failing', () =>
      runner.status().find((s) => s.failingSince !== undefined),
    );
    assert.match(failing.lastError ?? '', /HAPROXY_UNREACHABLE/);
    assert.equal(failing.pending, 1);

    await fs.symlink(haproxy.socketPath, link);
    await waitFor('the retried push', async () => (await servedSerial(haproxy, NEW_HOST)) === serialOf(certificate), {
      timeoutMs: 15_000,
    });
    const healthy = await waitFor('the sink healthy again', () =>
      runner.status().find((s) => s.failingSince === undefined && s.pending === 0 && !s.resyncPending),
    );
    assert.match(healthy.lastError ?? '', /HAPROXY_UNREACHABLE/, 'the last error is kept for the record');
    assert.ok(outcomes.includes('failed') && outcomes.includes('applied'));
    assert.ok(outcomes.includes('resynced'), 'a recovered sink is re-synced');
    await runner.stop();
  });

  it('an HAProxy that was stopped reads the files when it starts again', async () => {
    const sink = new HaproxySink({
      directory: haproxy.certDir,
      crtListPath: haproxy.crtListPath,
      runtime: new HaproxyRuntime({ socketPath: haproxy.socketPath }),
      logger: silentLogger(),
    });
    await haproxy.stop();
    const certificate = await makeCertificateData({ hostname: LATE_HOST });
    await assert.rejects(
      sink.apply({ kind: 'stored', certificate, reason: 'obtained' }),
      isCode('HAPROXY_UNREACHABLE'),
    );
    await haproxy.start();
    assert.equal(await servedSerial(haproxy, LATE_HOST), serialOf(certificate));
    // The retry then finds nothing to push.
    await sink.apply({ kind: 'stored', certificate, reason: 'obtained' });
    assert.equal(await servedSerial(haproxy, LATE_HOST), serialOf(certificate));
  });
});

describe('HAProxy runtime client failures', () => {
  let dir: string;
  let silent: Server;
  const accepted: Socket[] = [];

  before(async () => {
    dir = await fs.mkdtemp(join(tmpdir(), 'haproxy-rt-'));
    removeOnExit(dir);
    silent = createServer((socket) => accepted.push(socket));
    await new Promise<void>((resolve) => silent.listen(join(dir, 'silent.sock'), resolve));
  });

  after(async () => {
    for (const socket of accepted) socket.destroy();
    await new Promise<void>((resolve) => silent.close(() => resolve()));
  });

  it('no socket, and a socket that never answers, are HAPROXY_UNREACHABLE naming the socket', async () => {
    const absent = new HaproxyRuntime({ socketPath: join(dir, 'absent.sock') });
    await assert.rejects(absent.listCertificates(), (err: unknown) => {
      assert.ok(isCode('HAPROXY_UNREACHABLE')(err));
      assert.match((err as Error).message, /absent\.sock.*ENOENT/);
      return true;
    });
    const mute = new HaproxyRuntime({ socketPath: join(dir, 'silent.sock'), timeoutMs: 200 });
    await assert.rejects(mute.listCertificates(), (err: unknown) => {
      assert.ok(isCode('HAPROXY_UNREACHABLE')(err));
      assert.match((err as Error).message, /did not answer "show ssl cert" within 200 ms/);
      return true;
    });
  });

  it('a path HAProxy could not take as one argument is refused before anything is sent', () => {
    assert.throws(
      () =>
        new HaproxySink({
          directory: '/srv/my certs',
          crtListPath: '/srv/crt-list',
          runtime: undefined,
          logger: silentLogger(),
        }),
      /cannot be passed to HAProxy's runtime API/,
    );
  });
});
