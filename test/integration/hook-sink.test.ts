/**
 * The command hook with real shell commands: what it gets in its environment, the temporary copy
 * of the certificate, the timeout (its whole process group is killed), failures named and counted,
 * no shell injection through a hostname, secrets withheld, and what a re-sync runs it for.
 */
import assert from 'node:assert/strict';
import { promises as fs, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import type { CertificateData } from '../../src/domain/certificate.js';
import { ConsulAcmeError } from '../../src/errors.js';
import { HookSink, type HookResult, type HookSinkOptions } from '../../src/sinks/hook-sink.js';
import { makeCertificateData } from '../support/certs.js';
import { captureLogs } from '../support/logs.js';
import { removeOnExit } from '../support/processes.js';
import { waitFor } from '../support/wait.js';
import { keyMatches } from '../support/x509.js';

const HOST = 'hook.example.test';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Reads `KEY=value` lines as the hook wrote them with `env`. */
function envFile(path: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) env[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return env;
}

describe('command hook', () => {
  let out: string;
  let certificate: CertificateData;
  const results: HookResult[] = [];

  const hook = (command: string, extra: Partial<HookSinkOptions> = {}): HookSink =>
    new HookSink({
      command,
      timeoutMs: 10_000,
      logger: captureLogs().logger,
      environment: { PATH: process.env.PATH, OUT: out },
      onRun: (r) => results.push(r),
      ...extra,
    });

  before(async () => {
    out = await fs.mkdtemp(join(tmpdir(), 'hook-out-'));
    removeOnExit(out);
    certificate = await makeCertificateData({ hostname: HOST, otherHostnames: [`www.${HOST}`] });
  });

  it('gets the hostname, the names, the reason, the serial, the expiry and a private copy of the files', async () => {
    const sink = hook(
      [
        'env > "$OUT/env"',
        'cp "$CONSUL_ACME_CERT_FILE" "$OUT/cert.pem"',
        'cp "$CONSUL_ACME_KEY_FILE" "$OUT/key.pem"',
        'stat -c %a "$CONSUL_ACME_KEY_FILE" "$(dirname "$CONSUL_ACME_KEY_FILE")" > "$OUT/modes"',
      ].join('\n'),
    );
    await sink.apply({ kind: 'stored', certificate, reason: 'obtained' });
    const env = envFile(join(out, 'env'));
    assert.equal(env.CONSUL_ACME_HOSTNAME, HOST);
    assert.equal(env.CONSUL_ACME_HOSTNAMES, `${HOST},www.${HOST}`);
    assert.equal(env.CONSUL_ACME_REASON, 'obtained');
    assert.equal(env.CONSUL_ACME_NOT_AFTER, certificate.notAfter.toISOString());
    assert.match(env.CONSUL_ACME_SERIAL ?? '', /^[0-9A-F]+$/);
    assert.ok(keyMatches(readFileSync(join(out, 'cert.pem'), 'utf8'), readFileSync(join(out, 'key.pem'), 'utf8')));
    assert.deepEqual(readFileSync(join(out, 'modes'), 'utf8').trim().split('\n'), ['600', '700']);
    await assert.rejects(fs.access(env.CONSUL_ACME_CERT_FILE!), 'the temporary copy is removed afterwards');
    assert.equal(results.at(-1), 'succeeded');
  });

  it('a retirement gets the hostname and the reason, and no files', async () => {
    const sink = hook('env > "$OUT/env-retired"');
    await sink.apply({ kind: 'removed', hostname: HOST });
    const env = envFile(join(out, 'env-retired'));
    assert.equal(env.CONSUL_ACME_HOSTNAME, HOST);
    assert.equal(env.CONSUL_ACME_REASON, 'retired');
    assert.equal(env.CONSUL_ACME_CERT_FILE, undefined);
  });

  it('a hostname only ever reaches the environment, never the shell', async () => {
    const evil = await makeCertificateData({ hostname: HOST });
    const sneaky = {
      ...evil,
      hostname: `x$(touch ${join(out, 'PWNED')}).example.test`,
      hostnames: [`a;touch ${out}/PWNED2`],
    };
    const sink = hook('printf %s "$CONSUL_ACME_HOSTNAME" > "$OUT/name"');
    await sink.apply({ kind: 'stored', certificate: sneaky, reason: 'obtained' });
    assert.equal(readFileSync(join(out, 'name'), 'utf8'), sneaky.hostname);
    await assert.rejects(fs.access(join(out, 'PWNED')));
    await assert.rejects(fs.access(join(out, 'PWNED2')));
  });

  it("consul-acme's tokens are withheld from the hook's environment", async () => {
    const sink = hook('env > "$OUT/env-secrets"', {
      environment: { PATH: process.env.PATH, OUT: out, VAULT_TOKEN: 's.secret', KEEP_ME: 'yes' },
      withheld: ['VAULT_TOKEN'],
    });
    await sink.apply({ kind: 'stored', certificate, reason: 'renewed' });
    const env = envFile(join(out, 'env-secrets'));
    assert.equal(env.VAULT_TOKEN, undefined);
    assert.equal(env.KEEP_ME, 'yes');
  });

  it('a failing command is HOOK_FAILED with its exit status and last line, logged with its output and counted', async () => {
    const { logger, lines } = captureLogs();
    const sink = hook('echo "reloading nginx"; echo "nginx: config test failed" >&2; exit 3', { logger });
    await assert.rejects(sink.apply({ kind: 'stored', certificate, reason: 'renewed' }), (err: unknown) => {
      assert.ok(err instanceof ConsulAcmeError && err.code === 'HOOK_FAILED');
      assert.ok(err.retryable);
      assert.match(
        err.message,
        /hook for hook\.example\.test \(renewed\) exited with status 3: nginx: config test failed/,
      );
      return true;
    });
    const logged = lines.find((l) => l.event === 'hook_ran' && l.result === 'failed');
    assert.ok(logged, 'the run is logged');
    assert.equal(logged.exit_code, 3);
    assert.match(String(logged.output), /reloading nginx[\s\S]*config test failed/);
    assert.equal(results.at(-1), 'failed');
  });

  it('a command that outlives its timeout is killed with everything it started', async () => {
    const pidFile = join(out, 'sleeper.pid');
    const sink = hook(`sleep 60 & echo $! > "${pidFile}"; wait`, { timeoutMs: 500, killGraceMs: 500 });
    await assert.rejects(sink.apply({ kind: 'stored', certificate, reason: 'renewed' }), (err: unknown) => {
      assert.ok(err instanceof ConsulAcmeError && err.code === 'HOOK_FAILED');
      assert.match(err.message, /was killed after its timeout of 500 ms/);
      return true;
    });
    const sleeper = Number(readFileSync(pidFile, 'utf8'));
    await waitFor('the background sleep to be gone', () => !isAlive(sleeper), { timeoutMs: 5_000 });
    assert.equal(results.at(-1), 'timed_out');
  });

  it('a re-sync runs it once per certificate it has not been given, and once per name no longer held', async () => {
    const log = join(out, 'runs');
    const sink = hook('echo "$CONSUL_ACME_REASON $CONSUL_ACME_HOSTNAME" >> "$OUT/runs"');
    const other = await makeCertificateData({ hostname: 'other.example.test' });
    await sink.resync({ certificates: [certificate, other], unreadable: [] });
    await sink.resync({ certificates: [certificate, other], unreadable: [] });
    const renewed = await makeCertificateData({ hostname: HOST });
    await sink.resync({ certificates: [renewed], unreadable: ['other.example.test'] });
    await sink.resync({ certificates: [renewed], unreadable: [] });
    assert.deepEqual(readFileSync(log, 'utf8').trim().split('\n'), [
      `resync ${HOST}`,
      'resync other.example.test',
      `resync ${HOST}`,
      'retired other.example.test',
    ]);
  });
});
