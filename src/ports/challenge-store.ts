/**
 * HTTP-01 key authorizations, shared by every instance, so that whichever instance Fabio routes
 * the CA's validation request to can answer it.
 *
 * Contract (test/contract/challenge-store.contract.test.ts):
 * - `put` resolves only when the value is readable by every instance (Consul KV write returned true).
 * - `get` of an unknown token resolves `undefined`.
 * - `delete` of an unknown token is a no-op.
 * - Tokens are base64url (RFC 8555 §8.3); callers validate before calling.
 * - Safe across processes for Consul; memory is one process only.
 */
export interface ChallengeStore {
  put(token: string, keyAuthorization: string): Promise<void>;
  get(token: string): Promise<string | undefined>;
  delete(token: string): Promise<void>;
}
