/**
 * Where the Consul and Vault clients get their token: one place both ask for the current token on
 * every request, so a token replaced on disk is used from the next request on, without a restart.
 *
 * - `staticTokenSource` holds a token from the environment (`CONSUL_HTTP_TOKEN`, `VAULT_TOKEN`);
 *   it never changes.
 * - `FileTokenSource` reads a token file (`CONSUL_HTTP_TOKEN_FILE`, `VAULT_TOKEN_FILE`) at start and
 *   again whenever the file changes. Nomad and consul-template may replace the file by renaming a
 *   new one over it (docs/protocols.md §10), which `fs.watch` does not follow reliably (the watch
 *   stays on the old inode), so the file is polled: every `pollIntervalMs` its inode, size and
 *   modification time are compared with the last read, and it is read again when any differs.
 *   `refresh()` reads it at once; the clients call it when a request is refused (403), so a token
 *   replaced between two polls costs no failed request.
 * - A file that is missing, unreadable or empty for a moment (while it is being replaced) keeps
 *   the last token; the next poll tries again. The token itself is never logged.
 */
import { readFileSync, statSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { ConsulAcmeError, describeError } from '../errors.js';
import { F, silentLogger, type Logger } from '../logging.js';
import { systemClock, type Clock, type Timer } from '../ports/clock.js';

/** How often a token file is looked at. */
export const DEFAULT_TOKEN_FILE_POLL_MS = 2_000;

/**
 * The current token of one client. Contract:
 * - `current()` never throws and never waits: `''` means no token.
 * - `refresh()` re-reads the source now and resolves whether the token changed; it never rejects.
 *   Calls made while a read is in flight share it.
 * - `onChange(listener)` calls `listener` after every change of the token (not for the first read);
 *   it returns a function that removes the listener.
 * - `close()` stops any polling; idempotent.
 */
export interface TokenSource {
  /** Where the token comes from, for logs and the status, e.g. `file /secrets/vault_token`; never the token. */
  readonly description: string;
  current(): string;
  refresh(): Promise<boolean>;
  onChange(listener: () => void): () => void;
  close(): void;
}

/** A token that never changes (from the environment, or none: `''`). */
export function staticTokenSource(token: string | undefined, description: string): TokenSource {
  const value = token?.trim() ?? '';
  return {
    description,
    current: () => value,
    refresh: () => Promise.resolve(false),
    onChange: () => () => undefined,
    close: () => undefined,
  };
}

export interface FileTokenSourceOptions {
  path: string;
  /** What the token is for, in messages: `Consul token`, `Vault token`. */
  what: string;
  pollIntervalMs?: number;
  clock?: Clock;
  logger?: Logger;
}

/** The identity of one version of the file: inode, size and modification time. */
function signatureOf(stats: { ino: number; size: number; mtimeMs: number }): string {
  return `${stats.ino}:${stats.size}:${stats.mtimeMs}`;
}

export class FileTokenSource implements TokenSource {
  readonly description: string;
  private token: string;
  private signature: string;
  private readonly listeners = new Set<() => void>();
  private readonly pollIntervalMs: number;
  private readonly clock: Clock;
  private readonly log: Logger;
  private timer: Timer | undefined;
  private reading: Promise<boolean> | undefined;
  private closed = false;
  /** The last read problem, logged once until the file reads again. */
  private problem: string | undefined;

  /** Reads the file now; throws CONFIG_INVALID when it cannot be read or holds no token. */
  constructor(private readonly opts: FileTokenSourceOptions) {
    this.description = `file ${opts.path}`;
    this.pollIntervalMs = Math.max(10, opts.pollIntervalMs ?? DEFAULT_TOKEN_FILE_POLL_MS);
    this.clock = opts.clock ?? systemClock;
    this.log = (opts.logger ?? silentLogger()).child({ [F.component]: 'token-source' });
    let text: string;
    try {
      this.signature = signatureOf(statSync(opts.path));
      text = readFileSync(opts.path, 'utf8');
    } catch (err) {
      throw new ConsulAcmeError(
        'CONFIG_INVALID',
        `${opts.what} file ${opts.path} cannot be read: ${describeError(err)}`,
        {
          cause: err,
        },
      );
    }
    this.token = text.trim();
    if (this.token === '') throw new ConsulAcmeError('CONFIG_INVALID', `${opts.what} file ${opts.path} is empty`);
  }

  current(): string {
    return this.token;
  }

  /** Starts polling the file. */
  start(): this {
    if (!this.closed && this.timer === undefined) this.schedule();
    return this;
  }

  refresh(): Promise<boolean> {
    this.reading ??= this.read(true).finally(() => {
      this.reading = undefined;
    });
    return this.reading;
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): void {
    this.closed = true;
    this.timer?.cancel();
    this.timer = undefined;
  }

  private schedule(): void {
    this.timer = this.clock.setTimer(() => void this.poll(), this.pollIntervalMs);
  }

  private async poll(): Promise<void> {
    this.timer = undefined;
    if (this.closed) return;
    await (this.reading ?? this.read(false));
    if (!this.closed) this.schedule();
  }

  /** Reads the file when it changed (or always, with `force`); resolves whether the token changed. Never rejects. */
  private async read(force: boolean): Promise<boolean> {
    const { path, what } = this.opts;
    let text: string;
    let signature: string;
    try {
      signature = signatureOf(await stat(path));
      if (!force && signature === this.signature) return false;
      text = await readFile(path, 'utf8');
    } catch (err) {
      this.report(`cannot be read (${describeError(err)})`);
      return false;
    }
    const token = text.trim();
    if (token === '') {
      this.report('is empty');
      return false;
    }
    if (this.problem !== undefined) this.log.info({ path }, `${what} file reads again`);
    this.problem = undefined;
    this.signature = signature;
    if (token === this.token) return false;
    this.token = token;
    this.log.info({ path }, `${what} file changed; using the new token`);
    for (const listener of [...this.listeners]) {
      try {
        listener();
      } catch (err) {
        this.log.warn({ path, [F.err]: describeError(err) }, 'a token change listener failed');
      }
    }
    return true;
  }

  private report(problem: string): void {
    if (this.problem === problem) return;
    this.problem = problem;
    this.log.warn({ path: this.opts.path }, `${this.opts.what} file ${problem}; keeping the last token`);
  }
}
