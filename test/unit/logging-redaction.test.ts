/**
 * Secrets never reach a log line: private keys, key authorizations, tokens and HMAC keys are
 * censored at the top of a line and one level down, token headers under `req.headers`, and the
 * secret fields of a child logger's bindings. A line without secrets is written as it was given.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createLogger, REDACTED, censorNested } from '../../src/logging.js';

function capture(): { lines: Array<Record<string, unknown>>; logger: ReturnType<typeof createLogger> } {
  const lines: Array<Record<string, unknown>> = [];
  const logger = createLogger('info', { write: (line: string) => void lines.push(JSON.parse(line)) });
  return { lines, logger };
}

describe('log redaction', () => {
  test('censors each secret field at the top of a line and keeps the others', () => {
    const { lines, logger } = capture();
    logger.info(
      {
        keyPem: '-----BEGIN PRIVATE KEY-----',
        key: 'k',
        keyAuthorization: 'tok.thumb',
        token: 's.123',
        hmacKey: 'h',
        accountKey: 'a',
        hostname: 'a.example.com',
      },
      'secrets',
    );
    assert.deepEqual(
      { ...lines[0], time: undefined },
      {
        level: 30,
        time: undefined,
        service: 'consul-acme',
        keyPem: REDACTED,
        key: REDACTED,
        keyAuthorization: REDACTED,
        token: REDACTED,
        hmacKey: REDACTED,
        accountKey: REDACTED,
        hostname: 'a.example.com',
        msg: 'secrets',
      },
    );
  });

  test('censors secret fields one level down and token headers under req.headers, without touching the caller’s objects', () => {
    const { lines, logger } = capture();
    const order = { keyPem: 'PEM', orderUrl: 'https://ca/order/1' };
    const req = { method: 'GET', headers: { authorization: 'Bearer x', 'x-consul-token': 'c', accept: '*/*' } };
    logger.info({ order, req }, 'nested');
    assert.deepEqual(lines[0]?.order, { keyPem: REDACTED, orderUrl: 'https://ca/order/1' });
    assert.deepEqual(lines[0]?.req, {
      method: 'GET',
      headers: { authorization: REDACTED, 'x-consul-token': REDACTED, accept: '*/*' },
    });
    assert.equal(order.keyPem, 'PEM', 'the logged object is not changed');
    assert.equal(req.headers.authorization, 'Bearer x');
  });

  test("censors a child logger's bindings", () => {
    const { lines, logger } = capture();
    logger.child({ token: 's.123', component: 'vault' }).info('child');
    assert.equal(lines[0]?.token, REDACTED);
    assert.equal(lines[0]?.component, 'vault');
  });

  test('hands back a line without nested secrets as it is: nothing is copied', () => {
    const fields = {
      hostname: 'a.example.com',
      reason: 'waiting',
      nested: { until: '2026-01-01' },
      err: new Error('x'),
    };
    assert.equal(censorNested(fields), fields);
    const undefinedSecret = { order: { key: undefined }, hostname: 'a' };
    assert.equal(censorNested(undefinedSecret), undefinedSecret, 'a secret field without a value needs no censor');
  });
});
