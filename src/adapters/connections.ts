/**
 * The clients of Consul and Vault as the configuration describes them, with the token sources they
 * follow: a token file is polled and re-read on a refused request (adapters/token-source.ts), a
 * renewable Vault token is renewed (adapters/vault/vault-token.ts), and the TLS client settings
 * go to both. Both modes open Vault the same way (`openVaultConnection`; the sink-only mode opens
 * nothing else). Consul gets two clients when a home datacenter is set: `consul` for the local agent
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

/** A Vault client following its token source, and the renewal of a renewable token. */
export interface VaultConnection {
  client: VaultClient;
  /** Starts polling the token file (when one is set) and renewing the token. */
  start(): void;
  /** Stops polling and renewing. */
  close(): void;
}

/** The Vault client as the configuration describes it (address, token or token file, TLS settings). */
export function openVaultConnection(config: Config, logger: Logger): VaultConnection {
  const tokens = tokenSource(
    config.vaultTokenFile,
    config.vaultToken,
    { env: 'VAULT_TOKEN', what: 'Vault token' },
    logger,
  );
  const client = createVaultClient({
    address: config.vaultAddress,
    tokenSource: tokens,
    caCertPath: config.vaultCaCert,
    clientCertPath: config.vaultClientCert,
    clientKeyPath: config.vaultClientKey,
    tlsServerName: config.vaultTlsServerName,
  });
  const renewer = new VaultTokenRenewer({ client, tokens, logger });
  return {
    client,
    start() {
      if (tokens instanceof FileTokenSource) tokens.start();
      renewer.start();
    },
    close() {
      renewer.stop();
      tokens.close();
    },
  };
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
  const vault = config.store === 'vault' ? openVaultConnection(config, logger) : undefined;
  return {
    consul,
    coordination,
    consulTokens,
    vault: vault?.client,
    start() {
      if (consulTokens instanceof FileTokenSource) consulTokens.start();
      vault?.start();
    },
    close() {
      vault?.close();
      consulTokens.close();
    },
  };
}
