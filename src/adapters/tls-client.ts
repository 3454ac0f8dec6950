import type { TokenSource } from './token-source.js';

/** How to reach Consul or Vault: the address, the token and the TLS client settings. */
export interface ClientSettings {
  /** Base address, e.g. `http://127.0.0.1:8500` or `https://vault.service.consul:8200`. */
  address: string;
  /** The token, when it never changes; ignored when `tokenSource` is given. */
  token?: string;
  /** Where the current token comes from; asked on every request. */
  tokenSource?: TokenSource;
  /** PEM file of the CA that signed the server's certificate (https only); the system CAs otherwise. */
  caCertPath?: string;
  /** Client certificate and key (PEM files), for servers that verify incoming connections (https only). */
  clientCertPath?: string;
  clientKeyPath?: string;
  /** The name the server's certificate must carry, when it is not the address's host (https only). */
  tlsServerName?: string;
}

/**
 * What a failed TLS handshake with Consul or Vault means, in words that name the setting to fix.
 * Node reports the server's alerts as `ERR_SSL_*ALERT*` codes (alert 42 `bad certificate` and 116
 * `certificate required` when the server wants a client certificate and got none or one it does
 * not trust; 48 `unknown ca`), and its own verification failures of the server's certificate with
 * the OpenSSL codes below (docs/protocols.md §1.14).
 */

const SERVER_CERTIFICATE_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
]);

/** The settings of one system's TLS client: `CONSUL_` or `VAULT_`. */
export type TlsSettingsPrefix = 'CONSUL_' | 'VAULT_';

/**
 * A sentence for a TLS failure with error `code` (Node's `err.code`), or undefined when the code
 * is not a TLS failure. `system` is `Consul` or `Vault`.
 */
export function describeTlsFailure(code: string, system: string, prefix: TlsSettingsPrefix): string | undefined {
  if (
    /^ERR_SSL_.*ALERT_(BAD_CERTIFICATE|CERTIFICATE_REQUIRED|UNKNOWN_CA|CERTIFICATE_UNKNOWN|HANDSHAKE_FAILURE)/.test(
      code,
    )
  )
    return `${system} refused the TLS handshake (${code}): it verifies clients and we sent no certificate or one its CA did not sign; set ${prefix}CLIENT_CERT and ${prefix}CLIENT_KEY`;
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID')
    return `${system}'s certificate does not carry the name we connected to (${code}); connect by a name it carries, or set ${prefix}TLS_SERVER_NAME to one`;
  if (SERVER_CERTIFICATE_CODES.has(code))
    return `TLS verification of ${system} failed (${code}): set ${prefix}CACERT to the CA that signed its certificate`;
  return undefined;
}
