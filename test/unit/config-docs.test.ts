import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { settingsTableMarkdown, SETTINGS_TABLE_END, SETTINGS_TABLE_START } from '../../src/config/docs.js';
import { SETTINGS } from '../../src/config/schema.js';
import { ERROR_CODES } from '../../src/errors.js';
import { EVENTS } from '../../src/logging.js';

const readme = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');

test('the README settings table is exactly the one the schema renders (run scripts/settings-table.mjs after changing a setting)', () => {
  const start = readme.indexOf(SETTINGS_TABLE_START);
  const end = readme.indexOf(SETTINGS_TABLE_END);
  assert.ok(start >= 0 && end > start, 'README has the settings markers');
  assert.equal(readme.slice(start + SETTINGS_TABLE_START.length, end).trim(), settingsTableMarkdown());
});

test('every setting names its environment variable in the README', () => {
  for (const spec of Object.values(SETTINGS)) assert.ok(readme.includes(`\`${spec.env}\``), spec.env);
});

test('every error code is documented in docs/errors.md', () => {
  const doc = readFileSync(new URL('../../../docs/errors.md', import.meta.url), 'utf8');
  for (const code of Object.keys(ERROR_CODES)) assert.ok(doc.includes(`\`${code}\``), code);
});

test('every log event is documented in docs/events.md', () => {
  const doc = readFileSync(new URL('../../../docs/events.md', import.meta.url), 'utf8');
  for (const event of Object.values(EVENTS)) assert.ok(doc.includes(`\`${event}\``), event);
});
