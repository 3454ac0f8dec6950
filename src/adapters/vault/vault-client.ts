/**
 * The node-vault client as consul-acme uses it, and the one place where Vault errors become
 * ConsulAcmeErrors (docs/protocols.md §3, §3.1).
 *
 * - `noCustomHTTPVerbs: true`: `list()` sends `GET …?list=1` instead of the LIST verb, which
 *   Node's HTTP parser (and so any Node stand-in or proxy) rejects.
 * - Requests go through our own transport (vault-http.ts: node:https, one keep-alive agent, no
 *   axios). TLS verification is always on (a stray VAULT_SKIP_VERIFY changes nothing); a private
 *   CA is trusted by giving its PEM file.
 * - node-vault falls back to VAULT_TOKEN / VAULT_NAMESPACE / VAULT_PREFIX from the environment;
 *   only VAULT_PREFIX is neutralised here (the token and namespace are always passed explicitly
 *   by configuration, which main.ts reads).
 * - The token comes from a TokenSource, asked on every request; a request Vault refuses with 403
 *   is sent once more when re-reading the token source gives a different token, so a token
 *   replaced on disk between two polls of its file costs no failed request.
 * - A client certificate and key, and the name Vault's certificate must carry, go to that
 *   transport's https agent.
 */
import { readFileSync } from 'node:fs';
import NodeVault from 'node-vault';
import { ConsulAcmeError, StoreConflictError } from '../../errors.js';
import { describeTlsFailure, type ClientSettings } from '../tls-client.js';
import { staticTokenSource, type TokenSource } from '../token-source.js';
import { createVaultHttp } from './vault-http.js';

export type VaultClient = NodeVault.client;

export const DEFAULT_VAULT_TIMEOUT_MS = 10_000;

export interface VaultClientOptions extends ClientSettings {
  /** Vault Enterprise namespace (X-Vault-Namespace). */
  namespace?: string;
  /** Per-request timeout; default DEFAULT_VAULT_TIMEOUT_MS. */
  timeoutMs?: number;
}

export function createVaultClient(options: VaultClientOptions): VaultClient {
  const tokens = options.tokenSource ?? staticTokenSource(options.token, 'VAULT_TOKEN');
  const http = createVaultHttp({
    timeoutMs: options.timeoutMs ?? DEFAULT_VAULT_TIMEOUT_MS,
    ...(options.caCertPath !== undefined ? { ca: readFileSync(options.caCertPath) } : {}),
    ...(options.clientCertPath !== undefined ? { cert: readFileSync(options.clientCertPath) } : {}),
    ...(options.clientKeyPath !== undefined ? { key: readFileSync(options.clientKeyPath) } : {}),
    ...(options.tlsServerName !== undefined ? { servername: options.tlsServerName } : {}),
  });
  const client = NodeVault({
    endpoint: options.address,
    token: tokens.current(),
    apiVersion: 'v1',
    noCustomHTTPVerbs: true,
    'request-promise': http.asRequestPromise(),
    ...(options.namespace !== undefined ? { namespace: options.namespace } : {}),
  });
  // node-vault reads VAULT_PREFIX when pathPrefix is empty; our paths are always complete.
  Object.assign(client, { pathPrefix: '' });
  followTokenSource(client, tokens);
  return client;
}

type RequestOptions = { headers?: Record<string, string> } & Record<string, unknown>;

/**
 * Every request (node-vault's read, write, list, delete and its generated calls all go through
 * `client.request`) carries the token source's current token; a 403 is answered by reading the
 * token source again and, when it holds another token, sending the request once more.
 */
function followTokenSource(client: VaultClient, tokens: TokenSource): void {
  const send = client.request.bind(client) as (options: RequestOptions) => Promise<unknown>;
  const withToken = (options: RequestOptions, token: string): RequestOptions => {
    const headers = { ...options.headers };
    delete headers['X-Vault-Token'];
    if (token !== '') headers['X-Vault-Token'] = token;
    return { ...options, headers };
  };
  const request = async (options: RequestOptions = {}): Promise<unknown> => {
    const used = tokens.current();
    client.token = used;
    try {
      return await send(withToken(options, used));
    } catch (err) {
      if (vaultResponseOf(err)?.statusCode !== 403) throw err;
      await tokens.refresh();
      const current = tokens.current();
      if (current === '' || current === used) throw err;
      client.token = current;
      return send(withToken(options, current));
    }
  };
  Object.assign(client, { request });
}

/** The HTTP status and body of a node-vault error, when Vault answered at all. */
export function vaultResponseOf(err: unknown): { statusCode: number; body: unknown } | undefined {
  if (typeof err !== 'object' || err === null || !('response' in err)) return undefined;
  const response = (err as { response?: unknown }).response;
  if (typeof response !== 'object' || response === null) return undefined;
  const statusCode = (response as { statusCode?: unknown }).statusCode;
  if (typeof statusCode !== 'number') return undefined;
  return { statusCode, body: (response as { body?: unknown }).body };
}

const NETWORK_ERROR_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'ECONNABORTED',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ERR_NETWORK',
  'ERR_SOCKET_CONNECTION_TIMEOUT',
]);

/** Vault's error messages on one line (`1 error occurred:\n\t* permission denied\n\n` → `permission denied`). */
function vaultMessages(body: unknown): string {
  const errors = typeof body === 'object' && body !== null ? (body as { errors?: unknown }).errors : undefined;
  if (!Array.isArray(errors)) return '';
  return errors
    .map((e) =>
      String(e)
        .replace(/^\d+ errors? occurred:/, '')
        .replace(/\s*\*\s*/g, ' ')
        .replace(/\s+/g, ' ')
        .trim(),
    )
    .filter((e) => e !== '')
    .join('; ');
}

/**
 * Turns anything node-vault throws into a ConsulAcmeError. `what` names the operation and the
 * path (e.g. `write secret/data/fabio/certs/a.example.com`); `expectedVersion` is the
 * check-and-set version of a write, for the conflict message.
 *
 * - 403 → STORE_PERMISSION_DENIED (not retryable)
 * - 400 "check-and-set parameter did not match" → StoreConflictError
 * - 5xx (503 sealed, 501 not initialised), 429 standby, 472 DR secondary, 473 performance
 *   standby, network errors and timeouts → STORE_UNAVAILABLE, retryable
 * - TLS verification failures → STORE_UNAVAILABLE, not retryable (configuration)
 * - any other Vault answer (400, 404, 405) → STORE_UNAVAILABLE, not retryable, Vault's message kept
 */
export function classifyVaultError(err: unknown, what: string, expectedVersion?: number): ConsulAcmeError {
  if (err instanceof ConsulAcmeError) return err;
  const response = vaultResponseOf(err);
  if (response !== undefined) {
    const { statusCode } = response;
    const detail = vaultMessages(response.body);
    const suffix = detail === '' ? `Vault answered ${statusCode}` : `Vault answered ${statusCode}: ${detail}`;
    if (statusCode === 403) {
      return new ConsulAcmeError('STORE_PERMISSION_DENIED', `${what}: permission denied (${suffix})`, {
        cause: err,
        retryable: false,
      });
    }
    if (statusCode === 400 && detail.includes('check-and-set parameter did not match')) {
      return new StoreConflictError(what, expectedVersion ?? 0, { cause: err });
    }
    if (statusCode >= 500 || statusCode === 429 || statusCode === 472 || statusCode === 473) {
      const why = statusCode === 503 ? 'Vault is sealed or unavailable' : 'Vault is unavailable';
      return new ConsulAcmeError('STORE_UNAVAILABLE', `${what}: ${why} (${suffix})`, { cause: err, retryable: true });
    }
    return new ConsulAcmeError('STORE_UNAVAILABLE', `${what}: ${suffix}`, { cause: err, retryable: false });
  }
  const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  const message = err instanceof Error ? err.message : String(err);
  const tls = typeof code === 'string' ? describeTlsFailure(code, 'Vault', 'VAULT_') : undefined;
  if (tls !== undefined) {
    return new ConsulAcmeError('STORE_UNAVAILABLE', `${what}: ${tls} (${message})`, { cause: err, retryable: false });
  }
  if ((typeof code === 'string' && NETWORK_ERROR_CODES.has(code)) || /timeout|socket hang up|network/i.test(message)) {
    const shown = typeof code === 'string' ? `${code}: ${message}` : message;
    return new ConsulAcmeError('STORE_UNAVAILABLE', `${what}: Vault cannot be reached (${shown})`, {
      cause: err,
      retryable: true,
    });
  }
  return new ConsulAcmeError('INTERNAL', `${what}: ${message}`, { cause: err, retryable: true });
}

/** What a KV v2 read found: the latest version's data, or that it is deleted/destroyed, or nothing. */
export type KvReadResult =
  | { state: 'present'; version: number; data: Record<string, unknown> }
  | { state: 'deleted'; version: number }
  | { state: 'missing' };

/** Joins path parts and URL-encodes each segment (hostnames pass through unchanged). */
export function kvPath(...parts: string[]): string {
  return parts
    .flatMap((part) => part.split('/'))
    .filter((segment) => segment !== '')
    .map((segment) => encodeURIComponent(segment))
    .join('/');
}

/** Trims slashes so `/fabio/certs/` and `fabio/certs` mean the same. */
export function trimSlashes(path: string): string {
  return path.replace(/^\/+|\/+$/g, '');
}

/** Reads a KV v2 secret (latest or a given version); 404 means missing, or deleted when it carries metadata. */
export async function readKv(client: VaultClient, dataPath: string, version?: number): Promise<KvReadResult> {
  const url = version === undefined ? dataPath : `${dataPath}?version=${version}`;
  try {
    const response = await client.read(url);
    const data = response?.data?.data;
    const metadataVersion = Number(response?.data?.metadata?.version ?? 0);
    if (data === null || typeof data !== 'object') return { state: 'deleted', version: metadataVersion };
    return { state: 'present', version: metadataVersion, data: data as Record<string, unknown> };
  } catch (err) {
    const answer = vaultResponseOf(err);
    if (answer?.statusCode === 404) {
      const metadata = (answer.body as { data?: { metadata?: { version?: unknown } } } | undefined)?.data?.metadata;
      if (metadata !== undefined && metadata !== null && typeof metadata.version === 'number') {
        return { state: 'deleted', version: metadata.version };
      }
      return { state: 'missing' };
    }
    throw classifyVaultError(err, `read ${dataPath}`);
  }
}
