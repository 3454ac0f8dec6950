import type { OperatorRequest, StoredOperatorRequest } from '../domain/request.js';

/**
 * Where operator requests (src/domain/request.ts: reissue, revoke, adopt) wait until they are
 * carried out: Consul KV at `<CONSUL_ACME_KV_PREFIX>requests/<hostname>` in production, so that a
 * command taken by one instance is carried out by any instance, after any crash. One request per
 * hostname.
 *
 * Contract (test/contract/request-store.contract.test.ts):
 * - Safe across processes for Consul (check-and-set on the key's ModifyIndex, the `version`); the
 *   memory implementation is for one process.
 * - `get` of a hostname without a request resolves `undefined`, never throws for "missing". A
 *   stored value this release cannot read also resolves `undefined` (it is reported to the
 *   logger when one is given): it counts as no request, and `put(…, 0)` replaces it.
 * - `put(request, expectedVersion)` is a check-and-set: it writes only if the stored version is
 *   still `expectedVersion` (0: no readable request), and resolves the new version, or
 *   `undefined` when the version changed (nothing written).
 * - `delete(hostname, version)` removes the request only if its version is still `version`, and
 *   resolves whether the request is gone (true for one already gone; false when a newer one is
 *   there, which stays).
 * - `list()` resolves every readable request, sorted by hostname.
 * - Errors are ConsulAcmeErrors (CONSUL_UNAVAILABLE, retryable; CONSUL_PERMISSION_DENIED).
 * - Honours no AbortSignal: every call is one short request.
 */
export interface RequestStore {
  get(hostname: string): Promise<StoredOperatorRequest | undefined>;
  put(request: OperatorRequest, expectedVersion: number): Promise<number | undefined>;
  delete(hostname: string, version: number): Promise<boolean>;
  list(): Promise<StoredOperatorRequest[]>;
}
