/**
 * The clients of Consul and Vault as the configuration describes them, with the token sources they
 * follow: a token file is polled and re-read on a refused request (adapters/token-source.ts), a
 * renewable Vault token is renewed (adapters/vault/vault-token.ts), and the TLS client settings
 * go to both. Consul gets two clients when a home datacenter is set: `consul` for the local agent
 * (catalog watch, registrations) and `coordination` (`?dc=<home>`) for the state every instance
 * shares (KV, sessions); with one datacenter they are the same client.
 */
import type { Config } from '../config/schema.js';
import type { Logger } from '../logging.js';
import { createConsulClient, type Consul } from './consul/consul-client.js';
import { FileTokenSource, staticTokenSource, type TokenSource } from './token-source.js';
import { createVaultClient, type VaultClient } from './vault/vault-client.js';
import { VaultTokenRenewer } from './vault/vault-token.js';

export interface Connections {
  /** The local agent: catalog watch, service registrations. */
  consul: Consul;
  /** The home datacenter (`CONSUL_ACME_HOME_DATACENTER`): locks, sessions, challenges, state, budgets, policy lists. */
  coordination: Consul;
  consulTokens: TokenSource;
  /** Undefined unless the store is Vault. */
  vault: VaultClient | undefined;
  /** Starts polling the token files and renewing the Vault token. */
  start(): void;
  /** Stops polling and renewing. */
  close(): void;
}

function tokenSource(
  file: string | undefined,
  token: string | undefined,
  names: { env: string; what: string },
  logger: Logger,
): TokenSource {
  return file !== undefined
    ? new FileTokenSource({ path: file, what: names.what, logger })
    : staticTokenSource(token, names.env);
}

export function openConnections(config: Config, logger: Logger): Connections {
  const consulTokens = tokenSource(
    config.consulTokenFile,
    config.consulToken,
    { env: 'CONSUL_HTTP_TOKEN', what: 'Consul token' },
    logger,
  );
  const consulConnection = {
    address: config.consulAddress,
    tokenSource: consulTokens,
    caCertPath: config.consulCaCert,
    clientCertPath: config.consulClientCert,
    clientKeyPath: config.consulClientKey,
    tlsServerName: config.consulTlsServerName,
  };
  const consul = createConsulClient(consulConnection);
  const coordination =
    config.homeDatacenter === undefined
      ? consul
      : createConsulClient({ ...consulConnection, datacenter: config.homeDatacenter });
  let vault: VaultClient | undefined;
  let vaultTokens: TokenSource | undefined;
  let vaultRenewer: VaultTokenRenewer | undefined;
  if (config.store === 'vault') {
    vaultTokens = tokenSource(
      config.vaultTokenFile,
      config.vaultToken,
      { env: 'VAULT_TOKEN', what: 'Vault token' },
      logger,
    );
    vault = createVaultClient({
      address: config.vaultAddress,
      tokenSource: vaultTokens,
      caCertPath: config.vaultCaCert,
      clientCertPath: config.vaultClientCert,
      clientKeyPath: config.vaultClientKey,
      tlsServerName: config.vaultTlsServerName,
    });
    vaultRenewer = new VaultTokenRenewer({ client: vault, tokens: vaultTokens, logger });
  }
  return {
    consul,
    coordination,
    consulTokens,
    vault,
    start() {
      for (const source of [consulTokens, vaultTokens]) if (source instanceof FileTokenSource) source.start();
      vaultRenewer?.start();
    },
    close() {
      vaultRenewer?.stop();
      consulTokens.close();
      vaultTokens?.close();
    },
  };
}
