/**
 * Reads a Traefik dynamic-configuration file as Traefik's file provider would, and checks it
 * against the structure Traefik documents for certificates (Traefik itself is not installable here).
 */
import assert from 'node:assert/strict';
import { promises as fs, statSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { parse } from 'yaml';
import { dnsNames, keyMatches, splitPem } from './x509.js';

export interface Listed {
  hostname: string;
  certFile: string;
  keyFile: string;
  serial: string;
}

/**
 * Reads the dynamic file as Traefik would and checks it against Traefik's documented schema:
 * a top-level `tls` holding only `certificates`, a list of objects with exactly a `certFile` and a
 * `keyFile` (absolute paths to files that exist); each certificate file is a leaf (and chain) whose
 * key is in the key file. Returns the entries with the leaf's first DNS name and serial.
 */
export async function readTraefikDynamicFile(path: string): Promise<Listed[]> {
  const document: unknown = parse(await fs.readFile(path, 'utf8'));
  assert.ok(document !== null && typeof document === 'object' && !Array.isArray(document), 'a YAML mapping');
  assert.deepEqual(Object.keys(document), ['tls'], 'only the tls section');
  const tls = (document as { tls: unknown }).tls as Record<string, unknown>;
  assert.deepEqual(Object.keys(tls), ['certificates'], 'tls holds certificates only');
  assert.ok(Array.isArray(tls.certificates), 'tls.certificates is a list');
  const listed: Listed[] = [];
  for (const entry of tls.certificates as unknown[]) {
    assert.ok(entry !== null && typeof entry === 'object', 'each entry is a mapping');
    assert.deepEqual(Object.keys(entry).sort(), ['certFile', 'keyFile'], 'each entry has certFile and keyFile');
    const { certFile, keyFile } = entry as { certFile: unknown; keyFile: unknown };
    assert.ok(typeof certFile === 'string' && isAbsolute(certFile), 'certFile is an absolute path');
    assert.ok(typeof keyFile === 'string' && isAbsolute(keyFile), 'keyFile is an absolute path');
    const certPem = await fs.readFile(certFile, 'utf8');
    const keyPem = await fs.readFile(keyFile, 'utf8');
    assert.ok(keyMatches(certPem, keyPem), `${keyFile} is the key of ${certFile}`);
    assert.equal(statSync(keyFile).mode & 0o777, 0o600, 'the key file is readable by its owner only');
    const leaf = splitPem(certPem)[0]!;
    listed.push({ hostname: dnsNames(leaf)[0]!, certFile, keyFile, serial: leaf.serialNumber.toUpperCase() });
  }
  return listed;
}
