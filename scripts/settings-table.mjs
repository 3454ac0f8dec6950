#!/usr/bin/env node
// Rewrites the settings table in README.md from the configuration schema. Run after `npm run build`.
import { readFileSync, writeFileSync } from 'node:fs';
const { settingsTableMarkdown, SETTINGS_TABLE_START, SETTINGS_TABLE_END } = await import('../dist/src/config/docs.js');
const path = new URL('../README.md', import.meta.url);
const readme = readFileSync(path, 'utf8');
const start = readme.indexOf(SETTINGS_TABLE_START);
const end = readme.indexOf(SETTINGS_TABLE_END);
if (start < 0 || end < start) throw new Error('README.md has no settings markers');
writeFileSync(
  path,
  `${readme.slice(0, start + SETTINGS_TABLE_START.length)}\n${settingsTableMarkdown()}\n${readme.slice(end)}`,
);
console.log('README.md settings table updated');
