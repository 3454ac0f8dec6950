/**
 * A client for HAProxy's runtime API on its stats socket (a unix socket): one command per
 * connection (HAProxy answers and closes it), every answer parsed, every failure named. The
 * commands, their answers and their pitfalls are in docs/protocols.md §8; the parsers below follow
 * the answers recorded there.
 *
 * Errors: HAPROXY_UNREACHABLE (no socket, refused, no answer within `timeoutMs`), HAPROXY_REFUSED
 * (HAProxy answered with an error; its answer is in the message), ABORTED. All are retryable.
 */
import { connect } from 'node:net';
import { AbortedError, ConsulAcmeError } from '../errors.js';

export const DEFAULT_RUNTIME_TIMEOUT_MS = 10_000;

export interface HaproxyRuntimeOptions {
  socketPath: string;
  timeoutMs?: number;
}

/** A certificate as `show ssl cert <file>` describes it. */
export interface RuntimeCertificate {
  path: string;
  /** `Used` when a bind serves it, `Unused` otherwise. */
  status: string;
  /** Upper-case hex, as HAProxy prints it. */
  serial: string;
  /** SHA-1 of the leaf's DER, upper-case hex without colons. */
  sha1Fingerprint: string;
}

/** One line of a crt-list as `show ssl crt-list -n <list>` prints it. */
export interface CrtListEntry {
  path: string;
  /** 1-based line number, for `del ssl crt-list <list> <path>:<line>` when a path is listed twice. */
  line: number;
}

/** Characters that would split or end a runtime API command (it is split on spaces, `;` separates commands). */
const UNSAFE_ARGUMENT = /[\s;\\'"#]/;

/** Whether `path` can be one argument of a runtime API command. */
export function isRuntimeArgument(path: string): boolean {
  return path !== '' && !UNSAFE_ARGUMENT.test(path) && !/\p{Cc}/u.test(path);
}

/** Throws unless `path` can be one argument of a runtime API command. */
export function assertRuntimeArgument(path: string, what: string): void {
  if (!isRuntimeArgument(path)) {
    throw new ConsulAcmeError(
      'CONFIG_INVALID',
      `${what} ${JSON.stringify(path)} cannot be passed to HAProxy's runtime API (no spaces, quotes, backslashes, "#" or ";")`,
    );
  }
}

function refused(command: string, answer: string, hint?: string): ConsulAcmeError {
  const text = answer.replace(/\s+/g, ' ').trim() || '(an empty answer)';
  return new ConsulAcmeError('HAPROXY_REFUSED', `HAProxy refused "${command}": ${text}${hint ? ` (${hint})` : ''}`, {
    retryable: true,
  });
}

/** HAProxy's answer to a command it does not allow at the socket's level. */
const PERMISSION_DENIED = /Permission denied/i;
const PERMISSION_HINT = 'the stats socket needs "level admin"';

export class HaproxyRuntime {
  readonly socketPath: string;
  private readonly timeoutMs: number;

  constructor(options: HaproxyRuntimeOptions) {
    this.socketPath = options.socketPath;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_RUNTIME_TIMEOUT_MS;
  }

  /**
   * Sends one command on a fresh connection and resolves HAProxy's whole answer. A `payload`
   * (a PEM bundle) is sent after `<<` and ended by an empty line, so it must hold no empty line.
   */
  async send(command: string, payload?: string, signal?: AbortSignal): Promise<string> {
    if (signal?.aborted) throw new AbortedError(`haproxy "${command}"`, { cause: signal.reason });
    if (payload !== undefined && /\n\s*\n/.test(payload.trimEnd())) {
      throw new ConsulAcmeError(
        'INTERNAL',
        `haproxy "${command}": the payload holds an empty line, which would end it`,
      );
    }
    const text = payload === undefined ? `${command}\n` : `${command} <<\n${payload.trimEnd()}\n\n`;
    return new Promise<string>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let settled = false;
      const socket = connect(this.socketPath);
      const finish = (err: Error | undefined): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        socket.destroy();
        if (err) reject(err);
        else resolve(Buffer.concat(chunks).toString('utf8'));
      };
      const onAbort = (): void => finish(new AbortedError(`haproxy "${command}"`, { cause: signal?.reason }));
      const timer = setTimeout(
        () =>
          finish(
            new ConsulAcmeError(
              'HAPROXY_UNREACHABLE',
              `HAProxy's stats socket ${this.socketPath} did not answer "${command}" within ${this.timeoutMs} ms`,
              { retryable: true },
            ),
          ),
        this.timeoutMs,
      );
      signal?.addEventListener('abort', onAbort, { once: true });
      socket.on('connect', () => socket.write(text));
      socket.on('data', (chunk: Buffer) => chunks.push(chunk));
      socket.on('end', () => finish(undefined));
      socket.on('error', (err: NodeJS.ErrnoException) =>
        finish(
          new ConsulAcmeError(
            'HAPROXY_UNREACHABLE',
            `cannot reach HAProxy's stats socket ${this.socketPath}: ${err.code ?? ''} ${err.message}`.replace(
              /\s+/g,
              ' ',
            ),
            { retryable: true, cause: err },
          ),
        ),
      );
    });
  }

  /** `show ssl cert`: the certificate files HAProxy holds, and the file of the open transaction, if any. */
  async listCertificates(signal?: AbortSignal): Promise<{ paths: string[]; transaction: string | undefined }> {
    const command = 'show ssl cert';
    const answer = await this.send(command, undefined, signal);
    if (!answer.startsWith('#'))
      throw refused(command, answer, PERMISSION_DENIED.test(answer) ? PERMISSION_HINT : undefined);
    const paths: string[] = [];
    let transaction: string | undefined;
    let section = '';
    for (const line of answer.split('\n')) {
      if (line.startsWith('#')) section = line.slice(1).trim();
      else if (line === '') continue;
      else if (section === 'transaction') transaction = line.replace(/^\*/, '');
      else paths.push(line);
    }
    return { paths, transaction };
  }

  /** `show ssl cert <path>`; undefined when HAProxy holds no certificate under that name. */
  async showCertificate(path: string, signal?: AbortSignal): Promise<RuntimeCertificate | undefined> {
    const command = `show ssl cert ${path}`;
    const answer = await this.send(command, undefined, signal);
    if (/^Can't display the certificate: Not found/.test(answer)) return undefined;
    if (!answer.startsWith('Filename:')) throw refused(command, answer);
    const field = (name: string): string => new RegExp(`^${name}: *(.*)$`, 'm').exec(answer)?.[1]?.trim() ?? '';
    return {
      path: field('Filename').replace(/^\*/, ''),
      status: field('Status'),
      serial: field('Serial').toUpperCase(),
      sha1Fingerprint: field('SHA1 FingerPrint').toUpperCase(),
    };
  }

  /** `new ssl cert <path>`: an empty certificate store under that name. */
  async newCertificate(path: string, signal?: AbortSignal): Promise<'created' | 'exists'> {
    const command = `new ssl cert ${path}`;
    const answer = await this.send(command, undefined, signal);
    if (/^New empty certificate store/.test(answer)) return 'created';
    if (/already exists/.test(answer)) return 'exists';
    throw refused(command, answer, PERMISSION_DENIED.test(answer) ? PERMISSION_HINT : undefined);
  }

  /**
   * `set ssl cert <path> <<` with the PEM bundle: opens (or updates) the transaction for `path`.
   * HAProxy 2.6 puts the payload into whatever transaction is open, even one about another file,
   * and then says so (docs/protocols.md §8): such an answer aborts that transaction and fails.
   */
  async setCertificate(path: string, pem: string, signal?: AbortSignal): Promise<void> {
    const command = `set ssl cert ${path}`;
    const answer = await this.send(command, pem, signal);
    const match = /^Transaction (?:created|updated) for certificate (.*)!$/m.exec(answer);
    if (match?.[1] === path) return;
    if (match?.[1] !== undefined) {
      await this.abortCertificate(match[1], signal);
      throw refused(command, answer, `the payload went into the open transaction of ${match[1]}, which was aborted`);
    }
    throw refused(command, answer, PERMISSION_DENIED.test(answer) ? PERMISSION_HINT : undefined);
  }

  /** `commit ssl cert <path>`: the new certificate is served from the next handshake on. */
  async commitCertificate(path: string, signal?: AbortSignal): Promise<void> {
    const command = `commit ssl cert ${path}`;
    const answer = await this.send(command, undefined, signal);
    if (/^Success!$/m.test(answer)) return;
    throw refused(command, answer);
  }

  /** `abort ssl cert <path>`; an absent transaction is not an error. */
  async abortCertificate(path: string, signal?: AbortSignal): Promise<void> {
    const command = `abort ssl cert ${path}`;
    const answer = await this.send(command, undefined, signal);
    if (/^Transaction aborted/.test(answer) || /^No ongoing transaction/.test(answer)) return;
    throw refused(command, answer);
  }

  /** `del ssl cert <path>`; fails while a crt-list still uses it. */
  async deleteCertificate(path: string, signal?: AbortSignal): Promise<'deleted' | 'missing'> {
    const command = `del ssl cert ${path}`;
    const answer = await this.send(command, undefined, signal);
    if (/^Certificate '.*' deleted!/m.test(answer)) return 'deleted';
    if (/doesn't exist/.test(answer)) return 'missing';
    throw refused(command, answer);
  }

  /** `show ssl crt-list -n <list>`: the entries HAProxy serves from that crt-list, with line numbers. */
  async crtListEntries(list: string, signal?: AbortSignal): Promise<CrtListEntry[]> {
    const command = `show ssl crt-list -n ${list}`;
    const answer = await this.send(command, undefined, signal);
    if (!answer.startsWith('#')) {
      throw refused(
        command,
        answer,
        /didn't find the specified filename/.test(answer)
          ? `HAProxy has no crt-list ${list}: the path must be exactly the one on HAProxy's bind line`
          : undefined,
      );
    }
    const entries: CrtListEntry[] = [];
    for (const line of answer.split('\n')) {
      if (line === '' || line.startsWith('#')) continue;
      const first = line.split(' ')[0] ?? '';
      const colon = first.lastIndexOf(':');
      const number = Number(first.slice(colon + 1));
      if (colon > 0 && Number.isInteger(number)) entries.push({ path: first.slice(0, colon), line: number });
    }
    return entries;
  }

  /** `add ssl crt-list <list> <path>`. HAProxy adds a second line when the path is there already: check first. */
  async addToCrtList(list: string, path: string, signal?: AbortSignal): Promise<void> {
    const command = `add ssl crt-list ${list} ${path}`;
    const answer = await this.send(command, undefined, signal);
    if (/^Success!$/m.test(answer)) return;
    throw refused(command, answer);
  }

  /** `del ssl crt-list <list> <path>[:<line>]`; the line number is needed when the path is listed twice. */
  async deleteFromCrtList(
    list: string,
    path: string,
    line?: number,
    signal?: AbortSignal,
  ): Promise<'deleted' | 'missing'> {
    const command = `del ssl crt-list ${list} ${line === undefined ? path : `${path}:${line}`}`;
    const answer = await this.send(command, undefined, signal);
    if (/deleted in crtlist/.test(answer)) return 'deleted';
    if (/crt-list '.*' does not exist/.test(answer)) throw refused(command, answer);
    if (/can't be found in crt-list|certificate '.*' does not exist/.test(answer)) return 'missing';
    throw refused(command, answer);
  }
}
