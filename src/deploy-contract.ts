/**
 * What the deploy files (nomad/, deploy/) must agree with, computed from the code: the environment
 * variables the service reads, the Vault paths and Consul rules its adapters need, its listeners and
 * health paths. test/unit/deploy-agreement.test.ts checks the job, the policies, Fabio's properties
 * and the Dockerfile against these functions, so a change in the code that the deploy files do not
 * follow fails a test. Pure: no I/O, no process.env.
 */
import { ADMIN_HEALTH_PATHS, CONSUL_KV_FOLDERS, certificateHealthServiceName, consulKvFolder } from './naming.js';
import { kvPath, trimSlashes } from './adapters/vault/vault-client.js';
import { ADMIN_URL_ENV } from './cli/args.js';
import { CONFIG_FILE_ENV, DEFAULT_ADMIN_PORT, DEFAULT_CHALLENGE_PORT, SETTINGS } from './config/schema.js';

// ---------------------------------------------------------------------------------------------
// (a) Environment

/** Every environment variable the service and its CLI read: one per setting, the config file, the status command's admin URL. */
export function serviceEnvNames(): ReadonlySet<string> {
  return new Set([...Object.values(SETTINGS).map((spec) => spec.env), CONFIG_FILE_ENV, ADMIN_URL_ENV]);
}

// ---------------------------------------------------------------------------------------------
// (b) Vault

export type VaultCapability = 'create' | 'read' | 'update' | 'patch' | 'delete' | 'list' | 'sudo' | 'deny';

/** One `path "<path>" { capabilities = [...] }` rule, with the reason it is needed. */
export interface VaultRule {
  path: string;
  capabilities: readonly VaultCapability[];
  why: string;
}

/**
 * Where the Vault stores keep things: the KV v2 mount, Fabio's certificate prefix, the ACME account
 * path, the pending-order path.
 */
export interface VaultLayout {
  mount: string;
  prefix: string;
  accountPath: string;
  pendingPath: string;
}

/** The layout with the schema's defaults (`secret`, `fabio/certs`, `consul-acme/accounts`, `consul-acme/pending`). */
export function defaultVaultLayout(): VaultLayout {
  return {
    mount: SETTINGS.vaultMount.default,
    prefix: SETTINGS.vaultPrefix.default,
    accountPath: SETTINGS.vaultAccountPath.default,
    pendingPath: SETTINGS.vaultPendingPath.default,
  };
}

/**
 * The ACL path Vault checks for a LIST of `<folder>`: Vault appends `/` to list requests
 * (`GET …?list=true` included) before the policy check, so a rule without the slash never matches.
 */
function listRulePath(folder: string): string {
  return `${folder}/`;
}

/**
 * The rules VaultCertificateStore and VaultAccountStore need, and nothing more (KV v2 paths as the
 * stores build them with kvPath):
 * - certificate data: read (get, read-back of a version), create/update (check-and-set writes);
 * - the certificate folder's metadata: list (the renewal scan lists the certificates);
 * - each certificate's metadata: delete (retirement deletes the metadata, i.e. every version),
 *   read (inspecting versions of a secret; the KV v2 metadata read);
 * - account data: read, create/update (check-and-set writes);
 * - pending orders (VaultCertificateStore's getPending, putPending, deletePending, listPending):
 *   data read and create/update (check-and-set writes), the folder's metadata list, each
 *   record's metadata delete (every version: it holds a private key).
 */
export function storeVaultRules(layout: VaultLayout): VaultRule[] {
  const mount = trimSlashes(layout.mount);
  const prefix = trimSlashes(layout.prefix);
  const accountPath = trimSlashes(layout.accountPath);
  const pendingPath = trimSlashes(layout.pendingPath);
  return [
    {
      path: `${kvPath(mount, 'data', prefix)}/*`,
      capabilities: ['create', 'read', 'update'],
      why: 'certificates are read, written with check-and-set and read back',
    },
    {
      path: listRulePath(kvPath(mount, 'metadata', prefix)),
      capabilities: ['list'],
      why: 'the renewal scan lists the stored certificates',
    },
    {
      path: `${kvPath(mount, 'metadata', prefix)}/*`,
      capabilities: ['read', 'delete'],
      why: 'retiring a certificate deletes its metadata (every version)',
    },
    {
      path: `${kvPath(mount, 'data', accountPath)}/*`,
      capabilities: ['create', 'read', 'update'],
      why: 'the ACME account key is read and written with check-and-set',
    },
    {
      path: `${kvPath(mount, 'data', pendingPath)}/*`,
      capabilities: ['create', 'read', 'update'],
      why: 'a pending order is written with check-and-set before finalizing and read to complete it',
    },
    {
      path: listRulePath(kvPath(mount, 'metadata', pendingPath)),
      capabilities: ['list'],
      why: 'the pending orders are listed',
    },
    {
      path: `${kvPath(mount, 'metadata', pendingPath)}/*`,
      capabilities: ['delete'],
      why: 'a completed pending order is deleted with every version (it holds a private key)',
    },
  ];
}

/**
 * What the service asks Vault about its own token (src/adapters/vault/vault-token.ts and the
 * start-up self-check): look it up, renew it, ask what it may do. Vault's `default` policy grants
 * these; they are written out so that a role made with `token_no_default_policy` works too.
 */
export function tokenVaultRules(): VaultRule[] {
  return [
    {
      path: 'auth/token/lookup-self',
      capabilities: ['read'],
      why: "the token's ttl is looked up to renew it in time",
    },
    {
      path: 'auth/token/renew-self',
      capabilities: ['update'],
      why: 'a renewable token is renewed before it expires',
    },
    {
      path: 'sys/capabilities-self',
      capabilities: ['update'],
      why: 'the start-up self-check asks what the token may do, writing nothing',
    },
  ];
}

/** Every rule deploy/vault-policy.hcl must grant: the stores' paths and the token's own. */
export function serviceVaultRules(layout: VaultLayout): VaultRule[] {
  return [...storeVaultRules(layout), ...tokenVaultRules()];
}

/** Fabio's `cert=` value for its Vault certificate source: the logical path, without `data/`. */
export function fabioCertSourcePath(layout: Pick<VaultLayout, 'mount' | 'prefix'>): string {
  return `${trimSlashes(layout.mount)}/${trimSlashes(layout.prefix)}`;
}

/** What Fabio's own token needs to serve the certificates: list the folder, read each secret. */
export function fabioVaultRules(layout: Pick<VaultLayout, 'mount' | 'prefix'>): VaultRule[] {
  const mount = trimSlashes(layout.mount);
  const prefix = trimSlashes(layout.prefix);
  return [
    {
      path: listRulePath(kvPath(mount, 'metadata', prefix)),
      capabilities: ['list'],
      why: 'Fabio lists the certificate secrets',
    },
    {
      path: `${kvPath(mount, 'data', prefix)}/*`,
      capabilities: ['read'],
      why: "Fabio reads each secret's cert and key",
    },
  ];
}

/**
 * What a sink-only instance (CONSUL_ACME_MODE=sinks) needs of Vault: to list the certificates and
 * read each one, as Fabio does; it writes nothing. So nomad/consul-acme-sinks.nomad.hcl's role
 * takes deploy/fabio-vault-policy.hcl.
 */
export function sinkOnlyVaultRules(layout: Pick<VaultLayout, 'mount' | 'prefix'>): VaultRule[] {
  return fabioVaultRules(layout).map((rule) => ({
    ...rule,
    why: rule.capabilities.includes('list')
      ? 'the sink-only mode lists the certificates (re-sync, and new names)'
      : 'the sink-only mode reads each certificate and key for the sinks',
  }));
}

// ---------------------------------------------------------------------------------------------
// (c) Consul

export type ConsulResource = 'key_prefix' | 'session_prefix' | 'service_prefix' | 'node_prefix' | 'service';
export type ConsulPolicy = 'read' | 'write';

/** One Consul 1.8 ACL rule `<resource> "<name>" { policy = "<policy>" }`, with the reason it is needed. */
export interface ConsulRule {
  resource: ConsulResource;
  name: string;
  policy: ConsulPolicy;
  why: string;
}

export interface ConsulNeeds {
  kvPrefix: string;
  serviceName: string;
  registerService: boolean;
}

/** The needs with the schema's defaults (`consul-acme/`, service `consul-acme`, registration on). */
export function defaultConsulNeeds(): ConsulNeeds {
  return {
    kvPrefix: SETTINGS.kvPrefix.default,
    serviceName: SETTINGS.serviceName.default,
    registerService: SETTINGS.registerService.default,
  };
}

/** The Consul KV folders under the prefix (challenge tokens, locks, state, policy lists, budgets, operator requests). */
export function consulKvPrefixes(kvPrefix: string): Record<keyof typeof CONSUL_KV_FOLDERS, string> {
  return Object.fromEntries(
    Object.keys(CONSUL_KV_FOLDERS).map((k) => [k, consulKvFolder(kvPrefix, k as keyof typeof CONSUL_KV_FOLDERS)]),
  ) as Record<keyof typeof CONSUL_KV_FOLDERS, string>;
}

/** The least-privilege rules for the service's Consul token (Consul 1.8 ACL syntax). */
export function consulRules(needs: ConsulNeeds): ConsulRule[] {
  const rules: ConsulRule[] = [
    {
      resource: 'key_prefix',
      name: needs.kvPrefix,
      policy: 'write',
      why: 'challenge tokens, locks, state, policy lists, budgets and operator requests live under the KV prefix',
    },
    {
      resource: 'session_prefix',
      name: '',
      policy: 'write',
      why: "locks are held with a session on the local agent's node",
    },
    { resource: 'service_prefix', name: '', policy: 'read', why: "the catalog watch reads every service's tags" },
    { resource: 'node_prefix', name: '', policy: 'read', why: 'catalog reads list the nodes of each service' },
  ];
  if (needs.registerService) {
    rules.push({
      resource: 'service',
      name: needs.serviceName,
      policy: 'write',
      why: 'the instance registers itself with the challenge-route tags',
    });
    rules.push({
      resource: 'service',
      name: certificateHealthServiceName(needs.serviceName),
      policy: 'write',
      why: 'the certificate health check is registered beside it',
    });
  }
  return rules;
}

// ---------------------------------------------------------------------------------------------
// (d) Listeners and health

/** The path of the HTTP check the instance registers with its own Consul service. */
export const REGISTRATION_CHECK_PATH = ADMIN_HEALTH_PATHS.ready;

export interface Listener {
  /** Short name, also the port label in the Nomad job. */
  name: 'challenge' | 'admin';
  /** The environment variable that sets the port. */
  portEnv: string;
  defaultPort: number;
}

/** The two listeners: the HTTP-01 responder and the admin API. */
export const LISTENERS: readonly Listener[] = [
  { name: 'challenge', portEnv: SETTINGS.challengePort.env, defaultPort: DEFAULT_CHALLENGE_PORT },
  { name: 'admin', portEnv: SETTINGS.adminPort.env, defaultPort: DEFAULT_ADMIN_PORT },
];
