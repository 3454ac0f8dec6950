/**
 * HTTP-01 key authorizations, shared by every instance, so that whichever instance Fabio routes
 * the CA's validation request to can answer it.
 *
 * Contract (test/contract/challenge-store.contract.test.ts):
 * - `put` resolves only when the value is stored where every instance reads it (Consul KV write
 *   returned true). This instance's `get` sees it at once; another instance's within about a
 *   second (ConsulChallengeStore: as soon as its watch returns, and at most `missFreshnessMs`
 *   after its last read otherwise).
 * - `get` of an unknown token resolves `undefined`; a store it cannot read rejects (the responder
 *   answers 503). It is cheap for unknown tokens: a flood of them must not become a flood of
 *   reads of the shared store.
 * - `delete` of an unknown token is a no-op.
 * - `prune(olderThanMs)` deletes the tokens put more than `olderThanMs` ago (left behind by a
 *   crash) and resolves how many; a token put again meanwhile stays. The caller runs it now and
 *   then with an age well above any validation (an hour).
 * - `reassert()` puts again every token this instance put and has not deleted that the shared
 *   store no longer holds (a Consul that lost its data), and resolves how many: a validation in
 *   flight survives it.
 * - Tokens are base64url (RFC 8555 §8.3); callers validate before calling.
 * - Safe across processes for Consul; memory is one process only.
 */
export interface ChallengeStore {
  put(token: string, keyAuthorization: string): Promise<void>;
  get(token: string): Promise<string | undefined>;
  delete(token: string): Promise<void>;
  prune(olderThanMs: number): Promise<number>;
  reassert(): Promise<number>;
}
