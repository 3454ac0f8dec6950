import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  AcmeServerProblem,
  AcmeTransportError,
  classifyAcmeError,
  isTransientAcmeFailure,
  isRetryableProblem,
  parseProblemDocument,
  parseRetryAfterSeconds,
} from '../../src/adapters/acme/acme-errors.js';
import {
  ACME_RETRY_MAX_ATTEMPTS,
  ACME_RETRY_SCHEDULE_MS,
  ACME_RETRY_TOTAL_MS,
  nextRetryDelayMs,
} from '../../src/adapters/acme/acme-http.js';
import { AbortedError, AcmeProblemError } from '../../src/errors.js';

const NOW = new Date('2026-01-01T00:00:00Z');
const URN = 'urn:ietf:params:acme:error:';
const HOST = { hostnames: ['app.example.com'], step: 'new order' };

/** What axios rejects with when the server answered. */
function axiosResponseError(status: number, data: unknown, headers: Record<string, unknown> = {}): Error {
  return Object.assign(new Error(`Request failed with status code ${status}`), {
    isAxiosError: true,
    code: status >= 500 ? 'ERR_BAD_RESPONSE' : 'ERR_BAD_REQUEST',
    config: { method: 'post', url: 'https://ca.example/acme/new-order' },
    response: { status, headers, data },
  });
}

/** What axios rejects with when no answer came. */
function axiosNetworkError(code: string, message: string): Error {
  return Object.assign(new Error(message), {
    isAxiosError: true,
    code,
    config: { method: 'post', url: 'https://ca.example/acme/new-order' },
  });
}

function problem(type: string, detail: string, status = 400): Record<string, unknown> {
  return { type: `${URN}${type}`, detail, status };
}

interface Expected {
  code: 'ACME_PROBLEM' | 'ACME_RATE_LIMITED' | 'ACME_UNREACHABLE';
  retryable: boolean;
  problemType?: string;
  status?: number;
  retryAfterSeconds?: number;
  message: RegExp[];
}

const cases: {
  name: string;
  err: unknown;
  context?: typeof HOST | { hostnames: string[]; step: string };
  expected: Expected;
}[] = [
  {
    name: 'a rateLimited problem is ACME_RATE_LIMITED with Retry-After in seconds',
    err: axiosResponseError(429, problem('rateLimited', 'too many certificates already issued', 429), {
      'retry-after': '3600',
    }),
    expected: {
      code: 'ACME_RATE_LIMITED',
      retryable: true,
      problemType: `${URN}rateLimited`,
      status: 429,
      retryAfterSeconds: 3600,
      message: [/app\.example\.com/, /too many certificates already issued/, /retry after 3600 s/],
    },
  },
  {
    name: 'a Retry-After given as an HTTP date counts from now',
    err: axiosResponseError(429, problem('rateLimited', 'slow down', 429), {
      'Retry-After': 'Thu, 01 Jan 2026 01:30:00 GMT',
    }),
    expected: {
      code: 'ACME_RATE_LIMITED',
      retryable: true,
      retryAfterSeconds: 5400,
      status: 429,
      message: [/slow down/],
    },
  },
  {
    name: 'a rateLimited problem sent with another status is still rate limiting',
    err: axiosResponseError(403, problem('rateLimited', 'orders per account', 403)),
    expected: {
      code: 'ACME_RATE_LIMITED',
      retryable: true,
      problemType: `${URN}rateLimited`,
      message: [/orders per account/],
    },
  },
  {
    name: 'HTTP 429 without a problem document is rate limiting',
    err: axiosResponseError(429, 'Too Many Requests', { 'retry-after': '7' }),
    expected: {
      code: 'ACME_RATE_LIMITED',
      retryable: true,
      status: 429,
      retryAfterSeconds: 7,
      message: [/app\.example\.com/, /429/],
    },
  },
  {
    name: 'a serverInternal problem with HTTP 503 is ACME_UNREACHABLE and keeps its type',
    err: axiosResponseError(503, problem('serverInternal', 'the database is down', 503), { 'retry-after': '60' }),
    expected: {
      code: 'ACME_UNREACHABLE',
      retryable: true,
      problemType: `${URN}serverInternal`,
      status: 503,
      retryAfterSeconds: 60,
      message: [/HTTP 503/, /the database is down/, /app\.example\.com/],
    },
  },
  {
    name: 'an HTML 502 from a proxy is ACME_UNREACHABLE',
    err: axiosResponseError(502, '<html>Bad Gateway</html>'),
    expected: { code: 'ACME_UNREACHABLE', retryable: true, status: 502, message: [/HTTP 502/, /Bad Gateway/] },
  },
  {
    name: 'a refused connection is ACME_UNREACHABLE',
    err: axiosNetworkError('ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:14000'),
    expected: {
      code: 'ACME_UNREACHABLE',
      retryable: true,
      message: [/could not be reached/, /ECONNREFUSED/, /app\.example\.com/],
    },
  },
  {
    name: 'a request timeout is ACME_UNREACHABLE and says it timed out',
    err: axiosNetworkError('ECONNABORTED', 'timeout of 30000ms exceeded'),
    expected: { code: 'ACME_UNREACHABLE', retryable: true, message: [/timed out/] },
  },
  {
    name: 'an untrusted TLS certificate is ACME_UNREACHABLE',
    err: axiosNetworkError('DEPTH_ZERO_SELF_SIGNED_CERT', 'self-signed certificate'),
    expected: { code: 'ACME_UNREACHABLE', retryable: true, message: [/self-signed certificate/] },
  },
  ...[
    'rejectedIdentifier',
    'unsupportedIdentifier',
    'caa',
    'malformed',
    'badCSR',
    'externalAccountRequired',
    'userActionRequired',
  ].map((type) => ({
    name: `a ${type} problem is not retryable`,
    err: axiosResponseError(400, problem(type, `refused: ${type}`)),
    expected: {
      code: 'ACME_PROBLEM' as const,
      retryable: false,
      problemType: `${URN}${type}`,
      status: 400,
      message: [/app\.example\.com/, new RegExp(`refused: ${type} \\(${type}\\)`)],
    },
  })),
  ...[
    'unauthorized',
    'connection',
    'dns',
    'incorrectResponse',
    'tls',
    'badNonce',
    'orderNotReady',
    'accountDoesNotExist',
  ].map((type) => ({
    name: `a ${type} problem is retryable (the name may get routed later)`,
    err: axiosResponseError(403, problem(type, `failed: ${type}`, 403)),
    expected: {
      code: 'ACME_PROBLEM' as const,
      retryable: true,
      problemType: `${URN}${type}`,
      status: 403,
      message: [new RegExp(`failed: ${type}`)],
    },
  })),
  {
    name: 'an unknown problem type is retryable and kept',
    err: axiosResponseError(400, { type: 'urn:example:new-thing', detail: 'something new' }),
    expected: {
      code: 'ACME_PROBLEM',
      retryable: true,
      problemType: 'urn:example:new-thing',
      message: [/something new/],
    },
  },
  {
    name: 'a compound problem with a rejected name is not retryable and lists each name',
    err: axiosResponseError(400, {
      type: `${URN}compound`,
      detail: 'two problems',
      subproblems: [
        { ...problem('rejectedIdentifier', 'forbidden name'), identifier: { type: 'dns', value: 'bad.example.com' } },
        { ...problem('connection', 'refused'), identifier: { type: 'dns', value: 'app.example.com' } },
      ],
    }),
    expected: {
      code: 'ACME_PROBLEM',
      retryable: false,
      problemType: `${URN}compound`,
      message: [
        /bad\.example\.com: forbidden name \(rejectedIdentifier\)/,
        /app\.example\.com: refused \(connection\)/,
      ],
    },
  },
  {
    name: 'a compound problem of reachability failures is retryable',
    err: axiosResponseError(400, {
      type: `${URN}compound`,
      detail: 'x',
      subproblems: [problem('dns', 'no A record'), problem('connection', 'refused')],
    }),
    expected: { code: 'ACME_PROBLEM', retryable: true, problemType: `${URN}compound`, message: [/no A record/] },
  },
  {
    name: 'an authorization that became invalid names the failing host of a multi-name order',
    err: new AcmeServerProblem({
      ...problem('unauthorized', 'returned 404', 403),
      identifier: { type: 'dns', value: 'b.example.com' },
    }),
    context: { hostnames: ['a.example.com', 'b.example.com'], step: 'validation' },
    expected: {
      code: 'ACME_PROBLEM',
      retryable: true,
      problemType: `${URN}unauthorized`,
      status: 403,
      message: [
        /^acme validation for b\.example\.com \(order for a\.example\.com, b\.example\.com\) failed: returned 404 \(unauthorized\)$/,
      ],
    },
  },
  {
    name: 'a problem thrown by our transport keeps status and Retry-After',
    err: new AcmeServerProblem(
      { type: `${URN}rateLimited`, detail: 'too many new orders' },
      { status: 429, headers: { 'retry-after': '120' }, data: {} },
    ),
    expected: {
      code: 'ACME_RATE_LIMITED',
      retryable: true,
      status: 429,
      retryAfterSeconds: 120,
      message: [/too many new orders/],
    },
  },
  {
    name: 'a request our transport got no answer to is a retryable ACME_UNREACHABLE naming the request',
    err: new AcmeTransportError('ETIMEDOUT', 'timeout: no complete answer within 500 ms', {
      method: 'post',
      url: 'https://ca.example/acme/cert/1',
    }),
    context: { hostnames: ['app.example.com'], step: 'certificate download' },
    expected: {
      code: 'ACME_UNREACHABLE',
      retryable: true,
      message: [
        /^acme certificate download for app\.example\.com failed: the CA could not be reached \(timed out\)/,
        /\(POST https:\/\/ca\.example\/acme\/cert\/1\)$/,
      ],
    },
  },
  {
    name: 'a TLS failure from our transport is ACME_UNREACHABLE too',
    err: new AcmeTransportError('DEPTH_ZERO_SELF_SIGNED_CERT', 'self-signed certificate', {
      method: 'get',
      url: 'https://ca.example/dir',
    }),
    expected: { code: 'ACME_UNREACHABLE', retryable: true, message: [/DEPTH_ZERO_SELF_SIGNED_CERT/] },
  },
  {
    name: 'a plain Error from acme-client is a retryable ACME_PROBLEM with its text',
    err: new Error('Creating a new order did not return an order link'),
    expected: {
      code: 'ACME_PROBLEM',
      retryable: true,
      message: [/^acme new order for app\.example\.com failed: Creating a new order did not return an order link$/],
    },
  },
];

describe('classifyAcmeError', () => {
  for (const c of cases) {
    it(c.name, () => {
      const result = classifyAcmeError(c.err, NOW, c.context ?? HOST);
      assert.ok(result instanceof AcmeProblemError, `an AcmeProblemError, got ${String(result)}`);
      assert.equal(result.code, c.expected.code);
      assert.equal(result.retryable, c.expected.retryable);
      if ('problemType' in c.expected) assert.equal(result.problemType, c.expected.problemType);
      if ('status' in c.expected) assert.equal(result.status, c.expected.status);
      assert.equal(result.retryAfterSeconds, c.expected.retryAfterSeconds);
      for (const pattern of c.expected.message) assert.match(result.message, pattern);
      assert.equal(result.cause, c.err, 'the original error is the cause');
    });
  }

  it('returns an AbortedError and an AcmeProblemError unchanged', () => {
    const aborted = new AbortedError('acme order');
    const problemError = new AcmeProblemError('ACME_PROBLEM', 'already ours');
    assert.equal(classifyAcmeError(aborted, NOW), aborted);
    assert.equal(classifyAcmeError(problemError, NOW), problemError);
  });

  it('turns an axios cancellation into an AbortedError', () => {
    const canceled = Object.assign(new Error('canceled'), { name: 'CanceledError', code: 'ERR_CANCELED' });
    assert.ok(classifyAcmeError(canceled, NOW, HOST) instanceof AbortedError);
  });

  it('says when it does not know the hostname, rather than inventing one', () => {
    const result = classifyAcmeError(new Error('boom'), NOW);
    assert.match(result.message, /unknown hostname/);
  });
});

describe('parseRetryAfterSeconds', () => {
  const table: { name: string; value: unknown; expected: number | undefined }[] = [
    { name: 'delay-seconds are taken as they are', value: '120', expected: 120 },
    { name: 'surrounding whitespace is ignored', value: ' 5 ', expected: 5 },
    {
      name: 'an HTTP date in the future counts from now, rounded up',
      value: 'Thu, 01 Jan 2026 00:00:01 GMT',
      expected: 1,
    },
    { name: 'an HTTP date in the past means now', value: 'Wed, 31 Dec 2025 23:00:00 GMT', expected: 0 },
    { name: 'a malformed value is no value', value: 'soon', expected: undefined },
    { name: 'a missing header is no value', value: undefined, expected: undefined },
    { name: 'a repeated header uses the first value', value: ['30', '60'], expected: 30 },
  ];
  for (const row of table) {
    it(row.name, () => assert.equal(parseRetryAfterSeconds(row.value, NOW), row.expected));
  }

  it('reads headers through a get() accessor, as axios headers have', () => {
    const headers = { get: (name: string) => (name === 'retry-after' ? '42' : undefined) };
    const err = Object.assign(new Error('x'), {
      response: { status: 429, headers, data: problem('rateLimited', 'wait', 429) },
    });
    const result = classifyAcmeError(err, NOW, HOST);
    assert.ok(result instanceof AcmeProblemError);
    assert.equal(result.retryAfterSeconds, 42);
  });
});

describe('isRetryableProblem and parseProblemDocument', () => {
  it('treats a problem without a type as retryable', () => assert.equal(isRetryableProblem({ detail: 'x' }), true));
  it('reads a problem document from JSON text', () => {
    assert.deepEqual(
      parseProblemDocument('{"type":"urn:ietf:params:acme:error:caa","detail":"CAA forbids","status":403}'),
      {
        type: `${URN}caa`,
        detail: 'CAA forbids',
        status: 403,
      },
    );
  });
  it('does not mistake a certificate or an empty body for a problem', () => {
    assert.equal(parseProblemDocument('-----BEGIN CERTIFICATE-----'), undefined);
    assert.equal(parseProblemDocument({ status: 'valid' }), undefined);
    assert.equal(parseProblemDocument(undefined), undefined);
  });
});

/** What our transport throws for an error answer. */
function serverProblem(status: number, headers: Record<string, unknown> = {}): AcmeServerProblem {
  return new AcmeServerProblem(
    { type: `${URN}serverInternal`, detail: 'try again', status },
    { status, headers, data: problem('serverInternal', 'try again', status) },
  );
}
const transportError = (code: string): AcmeTransportError =>
  new AcmeTransportError(code, code, { method: 'post', url: 'https://ca.example/acme/order/1' });

describe('isTransientAcmeFailure: what an idempotent request is sent again for', () => {
  const table: { name: string; err: unknown; transient: boolean }[] = [
    { name: 'HTTP 503', err: serverProblem(503), transient: true },
    { name: 'HTTP 500', err: serverProblem(500), transient: true },
    { name: 'a timeout', err: transportError('ETIMEDOUT'), transient: true },
    { name: 'a reset connection', err: transportError('ECONNRESET'), transient: true },
    { name: 'a refused connection', err: transportError('ECONNREFUSED'), transient: true },
    { name: 'an axios-shaped 502', err: axiosResponseError(502, 'bad gateway'), transient: true },
    { name: 'HTTP 429 (the queue waits out rate limits)', err: serverProblem(429), transient: false },
    { name: 'HTTP 404', err: serverProblem(404), transient: false },
    { name: 'an object that became invalid', err: new AcmeServerProblem({ detail: 'invalid' }), transient: false },
    { name: 'a TLS failure', err: transportError('ERR_TLS_CERT_ALTNAME_INVALID'), transient: false },
    { name: 'a name that does not resolve', err: transportError('ENOTFOUND'), transient: false },
    { name: 'an abort', err: new AbortedError('acme order'), transient: false },
    { name: 'a plain Error', err: new Error('boom'), transient: false },
  ];
  for (const row of table) {
    it(`${row.transient ? 'retries' : 'does not retry'} ${row.name}`, () =>
      assert.equal(isTransientAcmeFailure(row.err), row.transient));
  }
});

describe('nextRetryDelayMs', () => {
  const noJitter = (): number => 0;
  const fullJitter = (): number => 0.999;

  it('waits the schedule after each transient failure, then gives up after the last attempt', () => {
    const delays = Array.from({ length: ACME_RETRY_MAX_ATTEMPTS }, (_, i) =>
      nextRetryDelayMs(serverProblem(503), i + 1, 0, NOW, noJitter),
    );
    assert.deepEqual(delays, [...ACME_RETRY_SCHEDULE_MS.slice(0, ACME_RETRY_MAX_ATTEMPTS - 1), undefined]);
  });

  it('lengthens a wait by at most half with jitter', () => {
    const delay = nextRetryDelayMs(serverProblem(503), 1, 0, NOW, fullJitter);
    assert.ok(delay !== undefined && delay > ACME_RETRY_SCHEDULE_MS[0]! && delay <= ACME_RETRY_SCHEDULE_MS[0]! * 1.5);
  });

  it('waits a Retry-After that fits in the bound', () => {
    assert.equal(nextRetryDelayMs(serverProblem(503, { 'retry-after': '3' }), 1, 0, NOW, noJitter), 3000);
  });

  it('gives up at once on a Retry-After longer than what is left of the bound', () => {
    assert.equal(nextRetryDelayMs(serverProblem(503, { 'retry-after': '120' }), 1, 0, NOW, noJitter), undefined);
    assert.equal(
      nextRetryDelayMs(serverProblem(503, { 'retry-after': '3' }), 1, ACME_RETRY_TOTAL_MS - 1000, NOW, noJitter),
      undefined,
    );
  });

  it('gives up when the next wait would pass the bound', () => {
    assert.equal(nextRetryDelayMs(serverProblem(503), 1, ACME_RETRY_TOTAL_MS - 10, NOW, noJitter), undefined);
  });

  it('never retries what is not transient', () => {
    assert.equal(nextRetryDelayMs(serverProblem(400), 1, 0, NOW, noJitter), undefined);
  });
});
