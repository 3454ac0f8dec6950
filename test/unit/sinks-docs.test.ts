import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { parse } from 'yaml';
import { HOOK_ENV } from '../../src/sinks/hook-sink.js';
import { haproxySinkLines } from '../support/haproxy.js';

const readme = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');

/** The fenced code blocks of the README in a language. */
function blocks(language: string): string[] {
  return [...readme.matchAll(new RegExp('```' + language + '\\n([\\s\\S]*?)```', 'g'))].map((m) => m[1]!);
}

test("the README's HAProxy configuration has the lines the tests run HAProxy with", () => {
  const [snippet] = blocks('haproxy');
  assert.ok(snippet, 'a haproxy block');
  const lines = haproxySinkLines({
    bind: ':443',
    socketPath: '/run/haproxy/admin.sock',
    defaultPem: '/etc/haproxy/default.pem',
    crtListPath: '/var/lib/consul-acme/haproxy/crt-list',
  });
  assert.ok(snippet.includes(`global\n  ${lines.global}\n`), lines.global);
  assert.ok(snippet.includes(`frontend https\n  ${lines.bind}\n`), lines.bind);
  assert.ok(readme.includes('CONSUL_ACME_HAPROXY_DIR=/var/lib/consul-acme/haproxy\n'));
  assert.ok(readme.includes('CONSUL_ACME_HAPROXY_SOCKET=/run/haproxy/admin.sock\n'));
});

test("the README's Traefik examples parse as YAML in the structure Traefik documents", () => {
  const documents = blocks('yaml').map((b) => parse(b) as Record<string, unknown>);
  const dynamic = documents.find((d) => 'tls' in d) as { tls: { certificates: Array<Record<string, string>> } };
  assert.ok(dynamic, 'an example of the dynamic file');
  assert.deepEqual(Object.keys(dynamic.tls), ['certificates']);
  for (const entry of dynamic.tls.certificates) assert.deepEqual(Object.keys(entry).sort(), ['certFile', 'keyFile']);
  const staticConfig = documents.find((d) => 'providers' in d) as { providers: { file: Record<string, unknown> } };
  assert.equal(staticConfig.providers.file.filename, '/var/lib/consul-acme/traefik/consul-acme.yml');
  assert.equal(staticConfig.providers.file.watch, true);
});

test("every variable the hook gets is in the README's table", () => {
  for (const name of Object.values(HOOK_ENV)) assert.ok(readme.includes(`| \`${name}\` |`), name);
});
