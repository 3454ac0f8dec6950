import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  IP_ADDRESS_REASON,
  SINGLE_LABEL_REASON,
  WILDCARD_REASON,
  isValidHostname,
  normalizeHostname,
} from '../../src/domain/hostname.js';

const label63 = 'a'.repeat(63);
/** Three 63-character labels, a shorter fourth, then ".com": exactly `length` characters. */
function nameOfLength(length: number): string {
  return `${label63}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(length - 196)}.com`;
}

const accepted: Array<{ name: string; input: string; hostname: string }> = [
  { name: 'a plain two-label name is kept as written', input: 'example.com', hostname: 'example.com' },
  { name: 'an uppercase name is lower-cased', input: 'App.Example.COM', hostname: 'app.example.com' },
  { name: 'one trailing dot is removed', input: 'app.example.com.', hostname: 'app.example.com' },
  { name: 'surrounding whitespace is trimmed', input: '  app.example.com \t\n', hostname: 'app.example.com' },
  { name: 'a unicode name becomes punycode', input: 'bücher.example', hostname: 'xn--bcher-kva.example' },
  {
    name: 'an uppercase unicode name becomes lower-case punycode',
    input: 'BÜCHER.example',
    hostname: 'xn--bcher-kva.example',
  },
  { name: 'an emoji label becomes punycode', input: '💩.la', hostname: 'xn--ls8h.la' },
  { name: 'a name already in punycode is kept', input: 'xn--bcher-kva.example', hostname: 'xn--bcher-kva.example' },
  { name: 'an ideographic full stop counts as a dot', input: 'bücher。example', hostname: 'xn--bcher-kva.example' },
  { name: 'hyphens inside a label are fine', input: 'my-app.ex-ample.com', hostname: 'my-app.ex-ample.com' },
  { name: 'digits in a label are fine, even a leading one', input: '1app.example.com', hostname: '1app.example.com' },
  { name: 'an all-digit label that is not the last is fine', input: '123.example.com', hostname: '123.example.com' },
  { name: 'a 63-character label is the longest allowed', input: `${label63}.com`, hostname: `${label63}.com` },
  { name: 'a 253-character name is the longest allowed', input: nameOfLength(253), hostname: nameOfLength(253) },
  {
    name: 'a 253-character name with a trailing dot is allowed',
    input: `${nameOfLength(253)}.`,
    hostname: nameOfLength(253),
  },
];

const rejected: Array<{ name: string; input: string; reason: string | RegExp }> = [
  { name: 'an empty string is rejected', input: '', reason: 'hostname is empty' },
  { name: 'whitespace alone is rejected as empty', input: '   ', reason: 'hostname is empty' },
  { name: 'a lone dot is rejected as empty', input: '.', reason: 'hostname is empty' },
  { name: 'two trailing dots leave an empty label', input: 'example.com..', reason: /empty label/ },
  { name: 'two dots in a row make an empty label', input: 'a..example.com', reason: /empty label/ },
  { name: 'a leading dot makes an empty label', input: '.example.com', reason: /empty label/ },
  {
    name: 'a 254-character name is too long',
    input: nameOfLength(254),
    reason: /254 characters long; the limit is 253/,
  },
  {
    name: 'a 64-character label is too long',
    input: `${'a'.repeat(64)}.com`,
    reason: /label "a+" is 64 characters long; the limit is 63/,
  },
  { name: 'a 10 kB name is rejected with a short reason', input: 'a'.repeat(10_000), reason: /^.{0,120}$/ },
  {
    name: 'a label with a leading hyphen is rejected',
    input: '-bad.example.com',
    reason: 'label "-bad" starts or ends with a hyphen',
  },
  {
    name: 'a label with a trailing hyphen is rejected',
    input: 'bad-.example.com',
    reason: 'label "bad-" starts or ends with a hyphen',
  },
  {
    name: 'an underscore label is rejected',
    input: '_acme.example.com',
    reason: 'label "_acme" may contain only letters, digits and hyphens',
  },
  {
    name: 'an underscore inside a unicode name is rejected',
    input: 'bü_cher.example',
    reason: /only letters, digits and hyphens/,
  },
  { name: 'an IPv4 address is rejected', input: '192.0.2.1', reason: IP_ADDRESS_REASON },
  { name: 'a bracketed IPv6 address is rejected', input: '[::1]', reason: IP_ADDRESS_REASON },
  { name: 'a bare IPv6 address is rejected', input: '2001:db8::1', reason: IP_ADDRESS_REASON },
  {
    name: 'full-width digits that spell an IPv4 address are rejected',
    input: '１９２.０.２.１',
    reason: IP_ADDRESS_REASON,
  },
  {
    name: 'a short numeric name is rejected for its all-digit top-level label',
    input: '127.1',
    reason: 'top-level label "1" is all digits',
  },
  {
    name: 'an all-digit top-level label is rejected',
    input: 'example.123',
    reason: 'top-level label "123" is all digits',
  },
  { name: 'a wildcard name is rejected', input: '*.example.com', reason: WILDCARD_REASON },
  { name: 'a star inside a label is rejected as a wildcard', input: 'a*b.example.com', reason: WILDCARD_REASON },
  { name: 'a full-width star is rejected as a wildcard', input: '＊.example.com', reason: WILDCARD_REASON },
  { name: 'localhost is a single-label name', input: 'localhost', reason: SINGLE_LABEL_REASON },
  { name: 'a single label with a trailing dot is still single-label', input: 'intranet.', reason: SINGLE_LABEL_REASON },
  {
    name: 'a name with a port is rejected for its colon',
    input: 'example.com:443',
    reason: 'hostname contains the character ":"',
  },
  {
    name: 'a name with a path is rejected rather than truncated',
    input: 'example.com/x',
    reason: 'hostname contains the character "/"',
  },
  { name: 'a space inside a name is rejected', input: 'exa mple.com', reason: 'hostname contains the character " "' },
  { name: 'a NUL byte is rejected', input: 'a\u0000.example.com', reason: 'hostname contains the character "\\u0000"' },
  {
    name: 'a URL is rejected for its scheme separator',
    input: 'https://example.com',
    reason: 'hostname contains the character ":"',
  },
  { name: 'invalid punycode is rejected', input: 'xn--zz.example.com', reason: 'label "xn--zz" is not valid punycode' },
  {
    name: 'a hex-looking top-level label is rejected by URL host rules',
    input: 'foo.0x7f',
    reason: /not a valid domain name/,
  },
  {
    name: 'a unicode name that IDNA refuses is rejected',
    input: 'a\u0378b.example',
    reason: /not a valid internationalised name/,
  },
];

describe('normalizeHostname accepts issuable names', () => {
  for (const c of accepted) {
    test(c.name, () => {
      assert.deepEqual(normalizeHostname(c.input), { ok: true, hostname: c.hostname });
      assert.equal(isValidHostname(c.input), true);
    });
  }
});

describe('normalizeHostname rejects names HTTP-01 cannot issue, saying why', () => {
  for (const c of rejected) {
    test(c.name, () => {
      const result = normalizeHostname(c.input);
      assert.equal(result.ok, false, `expected ${JSON.stringify(c.input.slice(0, 50))} to be rejected`);
      if (result.ok) return;
      if (typeof c.reason === 'string') assert.equal(result.reason, c.reason);
      else assert.match(result.reason, c.reason);
      assert.equal(isValidHostname(c.input), false);
    });
  }
});
