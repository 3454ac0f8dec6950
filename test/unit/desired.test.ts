import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { challengeRouteTags } from '../../src/domain/challenge.js';
import { desiredFromCatalog, type DesiredOptions, type DesiredSet } from '../../src/domain/desired.js';
import { WILDCARD_REASON } from '../../src/domain/hostname.js';

const open: DesiredOptions = { tagPrefix: 'consul-acme', fabioTagPrefix: 'urlprefix-', requireEnableTag: false };
const optIn: DesiredOptions = { ...open, requireEnableTag: true };

const cases: Array<{
  name: string;
  services: Record<string, string[]>;
  options: DesiredOptions;
  expected: DesiredSet;
}> = [
  {
    name: 'an empty catalog wants nothing',
    services: {},
    options: open,
    expected: { hostnames: [], rejected: [] },
  },
  {
    name: 'the consul service with no tags wants nothing',
    services: { consul: [] },
    options: open,
    expected: { hostnames: [], rejected: [] },
  },
  {
    name: 'names from Fabio, Traefik and our own tags are normalised and sorted',
    services: {
      web: ['urlprefix-WWW.Example.com:443/', 'traefik.http.routers.web.rule=Host(`bücher.example`)'],
      api: ['consul-acme.hosts=api.example.com.,zz.example.com'],
    },
    options: open,
    expected: {
      hostnames: [
        { hostname: 'api.example.com', services: ['api'] },
        { hostname: 'www.example.com', services: ['web'] },
        { hostname: 'xn--bcher-kva.example', services: ['web'] },
        { hostname: 'zz.example.com', services: ['api'] },
      ],
      rejected: [],
    },
  },
  {
    name: 'the same hostname from several services and tags merges into one entry',
    services: {
      web: ['urlprefix-app.example.com/', 'urlprefix-APP.example.com/static'],
      admin: ['traefik.http.routers.a.rule=Host(`app.example.com`)'],
      blog: ['consul-acme.hosts=app.example.com'],
    },
    options: open,
    expected: { hostnames: [{ hostname: 'app.example.com', services: ['admin', 'blog', 'web'] }], rejected: [] },
  },
  {
    name: 'invalid names and malformed tags are rejected with who asked',
    services: {
      web: ['urlprefix-*.example.com/', 'urlprefix-app.example.com', 'consul-acme.hosts=ok.example.com,localhost'],
    },
    options: open,
    expected: {
      hostnames: [{ hostname: 'ok.example.com', services: ['web'] }],
      rejected: [
        { value: '*.example.com', reason: WILDCARD_REASON, service: 'web', tag: 'urlprefix-*.example.com/' },
        {
          value: 'localhost',
          reason: 'single-label names are not publicly issuable',
          service: 'web',
          tag: 'consul-acme.hosts=ok.example.com,localhost',
        },
        {
          value: 'urlprefix-app.example.com',
          reason: 'fabio route has no path',
          service: 'web',
          tag: 'urlprefix-app.example.com',
        },
      ],
    },
  },
  {
    name: 'a HostRegexp beside a Host keeps the plain host and rejects the tag',
    services: { web: ['traefik.http.routers.w.rule=Host(`a.example.com`) || HostRegexp(`{x:.+}.example.com`)'] },
    options: open,
    expected: {
      hostnames: [{ hostname: 'a.example.com', services: ['web'] }],
      rejected: [
        {
          value: 'traefik.http.routers.w.rule=Host(`a.example.com`) || HostRegexp(`{x:.+}.example.com`)',
          reason: 'HostRegexp rules cannot be issued',
          service: 'web',
          tag: 'traefik.http.routers.w.rule=Host(`a.example.com`) || HostRegexp(`{x:.+}.example.com`)',
        },
      ],
    },
  },
  {
    name: 'with the enable tag required, services without it are skipped entirely',
    services: {
      web: ['consul-acme.enable', 'urlprefix-web.example.com/'],
      other: ['urlprefix-other.example.com/', 'urlprefix-*.other.example.com/'],
      api: ['consul-acme.enable=true', 'consul-acme.hosts=api.example.com'],
      off: ['consul-acme.enable=false', 'consul-acme.hosts=off.example.com'],
    },
    options: optIn,
    expected: {
      hostnames: [
        { hostname: 'api.example.com', services: ['api'] },
        { hostname: 'web.example.com', services: ['web'] },
      ],
      rejected: [],
    },
  },
  {
    name: 'without the enable tag required, every service is read',
    services: { other: ['urlprefix-other.example.com/'] },
    options: open,
    expected: { hostnames: [{ hostname: 'other.example.com', services: ['other'] }], rejected: [] },
  },
  {
    name: 'the same rejection from a repeated tag is reported once',
    services: { web: ['urlprefix-_bad.example.com/', 'urlprefix-_bad.example.com/'] },
    options: open,
    expected: {
      hostnames: [],
      rejected: [
        {
          value: '_bad.example.com',
          reason: 'label "_bad" may contain only letters, digits and hyphens',
          service: 'web',
          tag: 'urlprefix-_bad.example.com/',
        },
      ],
    },
  },
];

describe('desiredFromCatalog', () => {
  for (const c of cases) {
    test(c.name, () => assert.deepEqual(desiredFromCatalog(c.services, c.options), c.expected));
  }

  test('the output does not depend on the order of services or tags', () => {
    const forward = {
      b: ['urlprefix-x.example.com/', 'urlprefix-*.y/'],
      a: ['consul-acme.hosts=x.example.com,-z.example.com'],
    };
    const backward = {
      a: ['consul-acme.hosts=x.example.com,-z.example.com'],
      b: ['urlprefix-*.y/', 'urlprefix-x.example.com/'],
    };
    assert.deepEqual(desiredFromCatalog(forward, open), desiredFromCatalog(backward, open));
  });
});

describe('challengeRouteTags', () => {
  const routeCases: Array<{ name: string; hostnames: string[]; prefix?: string; expected: string[] }> = [
    { name: 'no managed hostnames need no routes', hostnames: [], expected: [] },
    {
      name: 'each managed hostname gets its own challenge route, sorted',
      hostnames: ['b.example.com', 'a.example.com'],
      expected: [
        'urlprefix-a.example.com/.well-known/acme-challenge/',
        'urlprefix-b.example.com/.well-known/acme-challenge/',
      ],
    },
    {
      name: 'a repeated hostname gets one route',
      hostnames: ['a.example.com', 'a.example.com'],
      expected: ['urlprefix-a.example.com/.well-known/acme-challenge/'],
    },
    {
      name: 'a custom Fabio prefix is used',
      hostnames: ['a.example.com'],
      prefix: 'fabio-',
      expected: ['fabio-a.example.com/.well-known/acme-challenge/'],
    },
  ];
  for (const c of routeCases) {
    test(c.name, () => assert.deepEqual(challengeRouteTags(c.hostnames, c.prefix), c.expected));
  }
});
