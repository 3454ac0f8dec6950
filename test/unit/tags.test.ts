import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DEFAULT_FABIO_TAG_PREFIX,
  DEFAULT_TAG_PREFIX,
  hostnamesFromTag,
  isEnableTag,
  type TagParseOptions,
} from '../../src/domain/tags.js';

const options: TagParseOptions = { tagPrefix: DEFAULT_TAG_PREFIX, fabioTagPrefix: DEFAULT_FABIO_TAG_PREFIX };

interface Case {
  name: string;
  tag: string;
  names: string[];
  /** Expected malformed reason; undefined means the tag must not be reported. */
  malformed?: string | RegExp;
  options?: TagParseOptions;
}

const cases: Case[] = [
  // Fabio
  {
    name: 'a Fabio route with a root path declares its host',
    tag: 'urlprefix-app.example.com/',
    names: ['app.example.com'],
  },
  {
    name: 'a Fabio route with a deeper path declares its host',
    tag: 'urlprefix-app.example.com/api/v1',
    names: ['app.example.com'],
  },
  {
    name: 'a Fabio route with a port keeps only the host',
    tag: 'urlprefix-app.example.com:8443/',
    names: ['app.example.com'],
  },
  {
    name: 'a Fabio route with options declares its host',
    tag: 'urlprefix-app.example.com/ strip=/x proto=https',
    names: ['app.example.com'],
  },
  {
    name: 'a Fabio route with a tab before its options declares its host',
    tag: 'urlprefix-app.example.com/\tredirect=301,https://x/',
    names: ['app.example.com'],
  },
  {
    name: 'a Fabio host is returned as written, uppercase included',
    tag: 'urlprefix-App.Example.com/',
    names: ['App.Example.com'],
  },
  {
    name: 'a Fabio glob host is returned so the validator can report it',
    tag: 'urlprefix-*.example.com/',
    names: ['*.example.com'],
  },
  {
    name: 'a Fabio route with a bracketed IPv6 host and port keeps the brackets',
    tag: 'urlprefix-[::1]:80/',
    names: ['[::1]'],
  },
  { name: 'a host-less Fabio route declares nothing', tag: 'urlprefix-/path', names: [] },
  { name: 'the host-less challenge route declares nothing', tag: 'urlprefix-/.well-known/acme-challenge/', names: [] },
  { name: 'a port-only Fabio TCP route declares nothing', tag: 'urlprefix-:9999 proto=tcp', names: [] },
  { name: 'a Fabio route with proto=tcp declares nothing', tag: 'urlprefix-db.example.com:5432/ proto=tcp', names: [] },
  {
    name: 'a Fabio route without a path is malformed',
    tag: 'urlprefix-app.example.com',
    names: [],
    malformed: 'fabio route has no path',
  },
  {
    name: 'a Fabio route with a port but no path is malformed',
    tag: 'urlprefix-app.example.com:80',
    names: [],
    malformed: 'fabio route has no path',
  },
  { name: 'a bare Fabio prefix is malformed', tag: 'urlprefix-', names: [], malformed: 'fabio route is empty' },
  {
    name: 'a Fabio route with a non-numeric port is malformed',
    tag: 'urlprefix-app.example.com:http/',
    names: [],
    malformed: /has a bad port/,
  },
  {
    name: 'a custom Fabio prefix is honoured',
    tag: 'fabio-app.example.com/',
    names: ['app.example.com'],
    options: { ...options, fabioTagPrefix: 'fabio-' },
  },
  {
    name: 'the default Fabio prefix is ignored when a custom one is set',
    tag: 'urlprefix-app.example.com/',
    names: [],
    options: { ...options, fabioTagPrefix: 'fabio-' },
  },
  { name: 'a tag that only resembles the Fabio prefix declares nothing', tag: 'urlprefix_app.example.com/', names: [] },

  // Traefik
  {
    name: 'a Traefik Host rule declares its host',
    tag: 'traefik.http.routers.web.rule=Host(`app.example.com`)',
    names: ['app.example.com'],
  },
  {
    name: 'a Traefik Host rule with several arguments declares them all',
    tag: 'traefik.http.routers.web.rule=Host(`a.example.com`, `b.example.com`)',
    names: ['a.example.com', 'b.example.com'],
  },
  {
    name: 'Traefik Host rules joined by || declare every host',
    tag: 'traefik.http.routers.web.rule=Host(`a.example.com`) || Host(`b.example.com`)',
    names: ['a.example.com', 'b.example.com'],
  },
  {
    name: 'a Traefik Host rule with a path matcher declares its host',
    tag: 'traefik.http.routers.web.rule=Host(`a.example.com`) && PathPrefix(`/api`)',
    names: ['a.example.com'],
  },
  {
    name: 'a parenthesised Traefik rule declares every host inside',
    tag: 'traefik.http.routers.web.rule=(Host(`a.example.com`) || Host(`b.example.com`)) && Method(`GET`, `POST`)',
    names: ['a.example.com', 'b.example.com'],
  },
  {
    name: 'a double-quoted Traefik Host argument is accepted',
    tag: 'traefik.http.routers.web.rule=Host("a.example.com")',
    names: ['a.example.com'],
  },
  {
    name: 'a lower-case Traefik host matcher is accepted',
    tag: 'traefik.http.routers.web.rule=host(`a.example.com`)',
    names: ['a.example.com'],
  },
  {
    name: 'a negated Traefik Host is not a host the router serves',
    tag: 'traefik.http.routers.web.rule=PathPrefix(`/`) && !Host(`internal.example.com`)',
    names: [],
  },
  {
    name: 'a Traefik HostSNI rule declares nothing',
    tag: 'traefik.http.routers.web.rule=HostSNI(`db.example.com`)',
    names: [],
  },
  {
    name: 'a Traefik rule without Host declares nothing',
    tag: 'traefik.http.routers.web.rule=PathPrefix(`/api`)',
    names: [],
  },
  {
    name: 'a Traefik HostRegexp rule is malformed',
    tag: 'traefik.http.routers.web.rule=HostRegexp(`{sub:[a-z]+}.example.com`)',
    names: [],
    malformed: 'HostRegexp rules cannot be issued',
  },
  {
    name: 'a Traefik HostRegexp beside a Host keeps the plain host and reports the regexp',
    tag: 'traefik.http.routers.web.rule=Host(`a.example.com`) || HostRegexp(`{x:.+}.example.com`)',
    names: ['a.example.com'],
    malformed: 'HostRegexp rules cannot be issued',
  },
  {
    name: 'an unfinished Traefik Host rule is malformed',
    tag: 'traefik.http.routers.x.rule=Host(`',
    names: [],
    malformed: 'traefik rule cannot be parsed: unbalanced backticks',
  },
  {
    name: 'a Traefik Host rule with unbalanced backticks is malformed',
    tag: 'traefik.http.routers.x.rule=Host(`a.example.com)',
    names: [],
    malformed: /unbalanced backticks/,
  },
  {
    name: 'a Traefik Host rule missing its closing parenthesis is malformed',
    tag: 'traefik.http.routers.x.rule=Host(`a.example.com`',
    names: [],
    malformed: /cannot be parsed/,
  },
  {
    name: 'an empty Traefik Host() is malformed',
    tag: 'traefik.http.routers.x.rule=Host()',
    names: [],
    malformed: 'Host() has an empty hostname',
  },
  {
    name: 'a Traefik Host with an empty string is malformed',
    tag: 'traefik.http.routers.x.rule=Host(``)',
    names: [],
    malformed: 'Host() has an empty hostname',
  },
  {
    name: 'a Traefik Host with an unquoted argument is malformed',
    tag: 'traefik.http.routers.x.rule=Host(a.example.com)',
    names: [],
    malformed: /cannot be parsed/,
  },
  {
    name: 'a broken Traefik rule that mentions no host declares nothing',
    tag: 'traefik.http.routers.x.rule=PathPrefix(`/api',
    names: [],
  },
  {
    name: 'a Traefik service tag that is not a rule declares nothing',
    tag: 'traefik.http.services.web.loadbalancer.server.port=8080',
    names: [],
  },
  {
    name: 'a Traefik TCP router rule declares nothing',
    tag: 'traefik.tcp.routers.db.rule=HostSNI(`db.example.com`)',
    names: [],
  },

  // consul-acme
  {
    name: 'our hosts tag declares every listed name',
    tag: 'consul-acme.hosts=a.example.com,b.example.com',
    names: ['a.example.com', 'b.example.com'],
  },
  {
    name: 'our hosts tag trims whitespace and skips empty entries',
    tag: 'consul-acme.hosts= a.example.com ,, b.example.com ,',
    names: ['a.example.com', 'b.example.com'],
  },
  {
    name: 'our hosts tag with nothing after = is malformed',
    tag: 'consul-acme.hosts=',
    names: [],
    malformed: "no hostnames after '='",
  },
  {
    name: 'our hosts tag with only commas is malformed',
    tag: 'consul-acme.hosts= , ,',
    names: [],
    malformed: "no hostnames after '='",
  },
  { name: 'our hosts tag without = is malformed', tag: 'consul-acme.hosts', names: [], malformed: /expected '='/ },
  {
    name: 'our hosts tag under a custom prefix is honoured',
    tag: 'acme.hosts=a.example.com',
    names: ['a.example.com'],
    options: { ...options, tagPrefix: 'acme' },
  },
  { name: 'the enable tag declares no hostnames', tag: 'consul-acme.enable', names: [] },
  {
    name: 'a tag that only starts like our hosts key declares nothing',
    tag: 'consul-acme.hostsx=a.example.com',
    names: [],
  },

  // Not ours, or garbage: never a throw.
  { name: 'an unrelated tag declares nothing', tag: 'production', names: [] },
  { name: 'an empty tag declares nothing', tag: '', names: [] },
  { name: 'a tag of control characters declares nothing', tag: '\u0000\u0001\u001b[31m\r\n', names: [] },
  { name: 'a 10 kB unrelated tag declares nothing', tag: 'x'.repeat(10_240), names: [] },
  {
    name: 'a 10 kB Fabio host is returned for the validator to refuse',
    tag: `urlprefix-${'a'.repeat(10_240)}/`,
    names: ['a'.repeat(10_240)],
  },
  {
    name: 'a 10 kB run of backticks in a Traefik rule is malformed, not slow',
    tag: `traefik.http.routers.x.rule=Host(${'`'.repeat(10_241)})`,
    names: [],
    malformed: /cannot be parsed/,
  },
  {
    name: 'deeply nested Traefik parentheses are malformed, not a stack overflow',
    tag: `traefik.http.routers.x.rule=${'('.repeat(10_000)}Host(\`a.example.com\`)${')'.repeat(10_000)}`,
    names: [],
    malformed: /nested too deeply/,
  },
  {
    name: 'a long run of negations in a Traefik rule is handled',
    tag: `traefik.http.routers.x.rule=${'!'.repeat(10_000)}Host(\`a.example.com\`)`,
    names: ['a.example.com'],
  },
  { name: 'a unicode Fabio host is returned as written', tag: 'urlprefix-bücher.example/', names: ['bücher.example'] },
];

describe('hostnamesFromTag', () => {
  for (const c of cases) {
    test(c.name, () => {
      const result = hostnamesFromTag(c.tag, c.options ?? options);
      assert.deepEqual(result.names, c.names);
      if (c.malformed === undefined) assert.equal(result.malformed, undefined);
      else if (typeof c.malformed === 'string') assert.equal(result.malformed, c.malformed);
      else assert.match(result.malformed ?? '', c.malformed);
    });
  }

  test('random bytes never make it throw, and every answer has the documented shape', () => {
    // A small deterministic generator, so a failure can be replayed.
    let seed = 0x2545f491;
    const nextByte = (): number => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % 256;
    };
    const prefixes = [
      '',
      'urlprefix-',
      'traefik.http.routers.r.rule=',
      'consul-acme.hosts=',
      'traefik.http.routers.r.rule=Host(',
    ];
    for (let i = 0; i < 2_000; i += 1) {
      const length = nextByte() % 64;
      const body = String.fromCharCode(...Array.from({ length }, () => nextByte()));
      const tag = `${prefixes[i % prefixes.length] ?? ''}${body}`;
      const result = hostnamesFromTag(tag, options);
      assert.ok(Array.isArray(result.names), `names for ${JSON.stringify(tag)}`);
      assert.ok(result.malformed === undefined || typeof result.malformed === 'string');
    }
  });
});

describe('isEnableTag', () => {
  const enableCases: Array<{ name: string; tag: string; expected: boolean }> = [
    { name: 'the bare enable tag opts in', tag: 'consul-acme.enable', expected: true },
    { name: 'enable=true opts in', tag: 'consul-acme.enable=true', expected: true },
    { name: 'enable=false does not opt in', tag: 'consul-acme.enable=false', expected: false },
    { name: 'a hosts tag is not the enable marker', tag: 'consul-acme.hosts=a.example.com', expected: false },
    { name: "Traefik's enable tag is not ours", tag: 'traefik.enable=true', expected: false },
  ];
  for (const c of enableCases) {
    test(c.name, () => assert.equal(isEnableTag(c.tag, options), c.expected));
  }

  test('a custom prefix moves the enable marker', () => {
    assert.equal(isEnableTag('acme.enable', { ...options, tagPrefix: 'acme' }), true);
    assert.equal(isEnableTag('consul-acme.enable', { ...options, tagPrefix: 'acme' }), false);
  });
});
