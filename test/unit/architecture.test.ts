/**
 * docs/architecture.md is the project's map: every file it names must exist, and every module of
 * the engine must be on it, so the map and the tree cannot drift apart.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

const root = fileURLToPath(new URL('../../..', import.meta.url));
const map = readFileSync(join(root, 'docs', 'architecture.md'), 'utf8');
const named = [...map.matchAll(/`((?:src|test|docs|scripts|deploy|nomad)\/[^`\s]*)`/g)].map((m) => m[1]!);

test('every file or folder docs/architecture.md names exists', () => {
  assert.ok(named.length > 20, `the map names ${named.length} paths`);
  assert.deepEqual(
    named.filter((path) => !existsSync(join(root, path))),
    [],
  );
});

test('every module of the engine is on the map', () => {
  const engine = readdirSync(join(root, 'src', 'engine')).filter((f) => f.endsWith('.ts'));
  assert.deepEqual(
    engine.filter((file) => !named.includes(`src/engine/${file}`)),
    [],
  );
});
