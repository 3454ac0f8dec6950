/** Token files: read at start, followed when replaced (by rename or in place), never logged. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, renameSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { FileTokenSource, staticTokenSource } from '../../src/adapters/token-source.js';
import { ConsulAcmeError } from '../../src/errors.js';
import { ManualClock } from '../../src/ports/clock.js';
import { captureLogs } from '../support/logs.js';
import { waitFor } from '../support/wait.js';

describe('FileTokenSource', () => {
  let dir: string;
  let file: string;
  let sources: FileTokenSource[];
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'consul-acme-token-'));
    file = join(dir, 'token');
    sources = [];
  });
  afterEach(() => {
    for (const source of sources) source.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const open = (pollIntervalMs = 20, logger = captureLogs('info').logger): FileTokenSource => {
    const source = new FileTokenSource({ path: file, what: 'Vault token', pollIntervalMs, logger }).start();
    sources.push(source);
    return source;
  };

  it('reads the token at start, without the newline an editor or a template leaves', () => {
    writeFileSync(file, 'token-one\n');
    const source = open();
    assert.equal(source.current(), 'token-one');
    assert.equal(source.description, `file ${file}`);
  });

  it('refuses a missing or empty file at start with CONFIG_INVALID naming the file', () => {
    assert.throws(
      () => open(),
      (err) => err instanceof ConsulAcmeError && err.code === 'CONFIG_INVALID' && err.message.includes(file),
    );
    writeFileSync(file, '  \n');
    assert.throws(() => open(), /Vault token file .* is empty/);
  });

  it('follows a file replaced by renaming a new one over it, as Nomad templates write it', async () => {
    writeFileSync(file, 'token-one\n');
    const source = open();
    let changes = 0;
    source.onChange(() => changes++);
    writeFileSync(join(dir, 'token.tmp'), 'token-two\n');
    renameSync(join(dir, 'token.tmp'), file);
    await waitFor('the new token', () => source.current() === 'token-two', { intervalMs: 10 });
    assert.equal(changes, 1);
  });

  it('follows a file rewritten in place', async () => {
    writeFileSync(file, 'token-one\n');
    const source = open();
    writeFileSync(file, 'token-three\n');
    await waitFor('the new token', () => source.current() === 'token-three', { intervalMs: 10 });
  });

  it('refresh() reads the file at once, between polls, and says whether the token changed', async () => {
    writeFileSync(file, 'token-one\n');
    const source = open(3_600_000);
    assert.equal(await source.refresh(), false);
    writeFileSync(file, 'token-two\n');
    assert.equal(await source.refresh(), true);
    assert.equal(source.current(), 'token-two');
  });

  it('keeps the last token while the file is missing or empty, says so once, and reads it again when it is back', async () => {
    writeFileSync(file, 'token-one\n');
    const { logger, lines } = captureLogs('info');
    const source = open(20, logger);
    unlinkSync(file);
    await waitFor('the warning', () =>
      lines.some((l) => /cannot be read .*; keeping the last token/.test(l.msg ?? '')),
    );
    assert.equal(await source.refresh(), false);
    assert.equal(source.current(), 'token-one');
    writeFileSync(file, '\n');
    await waitFor('the empty-file warning', () =>
      lines.some((l) => /is empty; keeping the last token/.test(l.msg ?? '')),
    );
    assert.equal(lines.filter((l) => /cannot be read/.test(l.msg ?? '')).length, 1, 'each problem is logged once');
    writeFileSync(file, 'token-four\n');
    await waitFor('the new token', () => source.current() === 'token-four', { intervalMs: 10 });
    for (const token of ['token-one', 'token-four'])
      assert.ok(!JSON.stringify(lines).includes(token), `${token} is never logged`);
  });

  it('polls on the clock it is given, and stops when closed', () => {
    writeFileSync(file, 'token-one\n');
    const clock = new ManualClock();
    const source = new FileTokenSource({ path: file, what: 'Consul token', pollIntervalMs: 2_000, clock }).start();
    assert.equal(clock.pendingTimers(), 1, 'one poll scheduled');
    source.close();
    assert.equal(clock.pendingTimers(), 0, 'nothing scheduled after close');
  });
});

describe('staticTokenSource', () => {
  it('holds one token, trimmed, and never changes', async () => {
    const source = staticTokenSource(' abc \n', 'VAULT_TOKEN');
    assert.equal(source.current(), 'abc');
    assert.equal(await source.refresh(), false);
    assert.equal(staticTokenSource(undefined, 'CONSUL_HTTP_TOKEN').current(), '');
  });
});
