/**
 * Hostnames from Consul service tags. Pure, and total: every function here returns for any
 * string (garbage, 10 kB, control characters) and never throws.
 *
 * Three tag kinds declare hostnames:
 * - Fabio routes: `urlprefix-<host>[:port]/<path> [options]`
 * - Traefik routers: `traefik.http.routers.<name>.rule=<rule>`, every `Host(...)` in the rule
 * - our own: `consul-acme.hosts=a.example.com,b.example.com`
 * `consul-acme.enable` is the opt-in marker (see `isEnableTag`), not a hostname source.
 *
 * Names come back raw (as written, not normalised); `normalizeHostname` decides whether they
 * can be issued. A tag of one of these kinds that is broken yields a `malformed` reason.
 */

export interface TagParseOptions {
  /** Prefix of our own tags, default `DEFAULT_TAG_PREFIX`. */
  tagPrefix: string;
  /** Fabio's `registry.consul.tagprefix`, default `DEFAULT_FABIO_TAG_PREFIX`. */
  fabioTagPrefix: string;
}

export const DEFAULT_TAG_PREFIX = 'consul-acme';
export const DEFAULT_FABIO_TAG_PREFIX = 'urlprefix-';
export const DEFAULT_TAG_PARSE_OPTIONS: Readonly<TagParseOptions> = Object.freeze({
  tagPrefix: DEFAULT_TAG_PREFIX,
  fabioTagPrefix: DEFAULT_FABIO_TAG_PREFIX,
});

export interface TagHostnames {
  /** Raw names the tag declares, in the order written. */
  names: string[];
  /** Set when the tag is one of ours (Fabio, Traefik, consul-acme) but cannot be used as written. */
  malformed?: string;
}

/** A tag that is not a hostname source: a fresh object each time, so callers may mutate it. */
function nothing(): TagHostnames {
  return { names: [] };
}

function malformed(reason: string, names: string[] = []): TagHostnames {
  return { names, malformed: reason };
}

/** Whether the tag opts a service in: `<tagPrefix>.enable` or `<tagPrefix>.enable=true`. */
export function isEnableTag(tag: string, options: TagParseOptions = DEFAULT_TAG_PARSE_OPTIONS): boolean {
  if (typeof tag !== 'string') return false;
  const marker = `${options.tagPrefix}.enable`;
  return tag === marker || tag === `${marker}=true`;
}

/** The raw hostnames a single tag declares, or why one of our tag kinds is malformed. */
export function hostnamesFromTag(tag: string, options: TagParseOptions = DEFAULT_TAG_PARSE_OPTIONS): TagHostnames {
  if (typeof tag !== 'string') return nothing();
  if (options.fabioTagPrefix !== '' && tag.startsWith(options.fabioTagPrefix)) {
    return fabioHostnames(tag.slice(options.fabioTagPrefix.length));
  }
  const ownHosts = `${options.tagPrefix}.hosts`;
  if (tag === ownHosts || tag.startsWith(`${ownHosts}=`)) return ownHostnames(tag.slice(ownHosts.length));
  const traefik = TRAEFIK_RULE_TAG.exec(tag);
  if (traefik !== null) return traefikHostnames(traefik[1] ?? '');
  return nothing();
}

// ---------------------------------------------------------------------------------------------
// Our own tag

function ownHostnames(afterKey: string): TagHostnames {
  if (!afterKey.startsWith('=')) return malformed("expected '=' and a comma-separated list of hostnames");
  const names = afterKey
    .slice(1)
    .split(',')
    .map((name) => name.trim())
    .filter((name) => name !== '');
  return names.length === 0 ? malformed("no hostnames after '='") : { names };
}

// ---------------------------------------------------------------------------------------------
// Fabio: urlprefix-<host>[:port]/<path> [options]

const WHITESPACE = /\s/;
const DIGITS = /^[0-9]+$/;

function fabioHostnames(rest: string): TagHostnames {
  const trimmed = rest.trimStart();
  const firstSpace = trimmed.search(WHITESPACE);
  const route = firstSpace === -1 ? trimmed : trimmed.slice(0, firstSpace);
  const routeOptions = firstSpace === -1 ? [] : trimmed.slice(firstSpace).split(WHITESPACE);

  // TCP routes (`:1234 proto=tcp`, or any route with proto=tcp) carry no HTTP hostname.
  if (routeOptions.includes('proto=tcp') || route.startsWith(':')) return nothing();
  if (route === '') return malformed('fabio route is empty');
  // Host-less routes (`/path`) apply to every host and declare none.
  if (route.startsWith('/')) return nothing();

  const slash = route.indexOf('/');
  if (slash === -1) return malformed('fabio route has no path');
  const hostAndPort = route.slice(0, slash);
  const host = stripPort(hostAndPort);
  if (host === undefined) return malformed(`fabio route host ${shown(hostAndPort)} has a bad port`);
  return { names: [host] };
}

/** `host:port` → `host`, `[v6]:port` → `[v6]`; undefined when the port is not a number. */
function stripPort(hostAndPort: string): string | undefined {
  if (hostAndPort.startsWith('[')) {
    const close = hostAndPort.indexOf(']');
    if (close === -1) return hostAndPort;
    const after = hostAndPort.slice(close + 1);
    if (after === '') return hostAndPort;
    return after.startsWith(':') && DIGITS.test(after.slice(1)) ? hostAndPort.slice(0, close + 1) : undefined;
  }
  const colon = hostAndPort.lastIndexOf(':');
  if (colon === -1) return hostAndPort;
  return DIGITS.test(hostAndPort.slice(colon + 1)) ? hostAndPort.slice(0, colon) : undefined;
}

function shown(text: string): string {
  return JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}…` : text);
}

// ---------------------------------------------------------------------------------------------
// Traefik: traefik.http.routers.<name>.rule=<rule>

// Router names have no dots; `[^.=]` keeps this linear on any input.
const TRAEFIK_RULE_TAG = /^traefik\.http\.routers\.[^.=]+\.rule=([\s\S]*)$/;

/** Matchers whose arguments are HTTP hostnames (Traefik v2 accepts several per call). */
const HOST_MATCHERS = new Set(['host', 'hostheader']);
const HOST_REGEXP_MATCHERS = new Set(['hostregexp']);

type Token =
  | { kind: 'ident'; text: string }
  | { kind: 'string'; text: string }
  | { kind: '(' | ')' | ',' | '!' | '&&' | '||' | 'end' };

class RuleSyntaxError extends Error {}

function tokenize(rule: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < rule.length) {
    const char = rule[i] ?? '';
    if (WHITESPACE.test(char)) {
      i += 1;
    } else if (char === '(' || char === ')' || char === ',' || char === '!') {
      tokens.push({ kind: char });
      i += 1;
    } else if ((char === '&' || char === '|') && rule[i + 1] === char) {
      tokens.push({ kind: char === '&' ? '&&' : '||' });
      i += 2;
    } else if (char === '`') {
      const close = rule.indexOf('`', i + 1);
      if (close === -1) throw new RuleSyntaxError('unbalanced backticks');
      tokens.push({ kind: 'string', text: rule.slice(i + 1, close) });
      i = close + 1;
    } else if (char === '"') {
      let text = '';
      let j = i + 1;
      for (; j < rule.length && rule[j] !== '"'; j += 1) {
        if (rule[j] === '\\') j += 1;
        text += rule[j] ?? '';
      }
      if (j >= rule.length) throw new RuleSyntaxError('unbalanced double quotes');
      tokens.push({ kind: 'string', text });
      i = j + 1;
    } else if (/[A-Za-z]/.test(char)) {
      let j = i + 1;
      while (j < rule.length && /[A-Za-z0-9_]/.test(rule[j] ?? '')) j += 1;
      tokens.push({ kind: 'ident', text: rule.slice(i, j) });
      i = j;
    } else {
      throw new RuleSyntaxError(`unexpected character ${JSON.stringify(char)}`);
    }
  }
  tokens.push({ kind: 'end' });
  return tokens;
}

/**
 * Recursive-descent parser for Traefik's rule grammar:
 *   or := and ('||' and)* ; and := unary ('&&' unary)* ; unary := '!' unary | primary
 *   primary := '(' or ')' | Matcher '(' [string (',' string)*] ')'
 * Host names under an odd number of `!` are not served by the router, so they are not collected.
 */
class RuleParser {
  private position = 0;
  readonly names: string[] = [];
  readonly problems: string[] = [];

  constructor(private readonly tokens: Token[]) {}

  parse(): void {
    if (this.peek().kind === 'end') throw new RuleSyntaxError('rule is empty');
    this.or(false);
    if (this.peek().kind !== 'end') throw new RuleSyntaxError(`unexpected ${describe(this.peek())}`);
  }

  private peek(): Token {
    return this.tokens[this.position] ?? { kind: 'end' };
  }

  private next(): Token {
    const token = this.peek();
    if (this.position < this.tokens.length) this.position += 1;
    return token;
  }

  private expect(kind: Token['kind']): Token {
    const token = this.next();
    if (token.kind !== kind) throw new RuleSyntaxError(`expected ${JSON.stringify(kind)} but found ${describe(token)}`);
    return token;
  }

  private or(negated: boolean): void {
    this.and(negated);
    while (this.peek().kind === '||') {
      this.next();
      this.and(negated);
    }
  }

  private and(negated: boolean): void {
    this.unary(negated);
    while (this.peek().kind === '&&') {
      this.next();
      this.unary(negated);
    }
  }

  private unary(negated: boolean): void {
    // A loop, not recursion, so a long run of `!` cannot overflow the stack.
    let negations = 0;
    while (this.peek().kind === '!') {
      this.next();
      negations += 1;
    }
    this.primary(negated !== (negations % 2 === 1));
  }

  private primary(negated: boolean): void {
    const token = this.next();
    if (token.kind === '(') {
      this.or(negated);
      this.expect(')');
      return;
    }
    if (token.kind !== 'ident') throw new RuleSyntaxError(`unexpected ${describe(token)}`);
    this.expect('(');
    const args: string[] = [];
    if (this.peek().kind !== ')') {
      for (;;) {
        const arg = this.expect('string');
        if (arg.kind === 'string') args.push(arg.text);
        if (this.peek().kind !== ',') break;
        this.next();
      }
    }
    this.expect(')');
    const matcher = token.text.toLowerCase();
    if (HOST_REGEXP_MATCHERS.has(matcher)) {
      this.problems.push('HostRegexp rules cannot be issued');
    } else if (HOST_MATCHERS.has(matcher)) {
      const hosts = args.map((arg) => arg.trim());
      if (hosts.length === 0 || hosts.some((host) => host === '')) {
        this.problems.push(`${token.text}() has an empty hostname`);
      } else if (!negated) {
        this.names.push(...hosts);
      }
    }
  }
}

function describe(token: Token): string {
  if (token.kind === 'end') return 'end of rule';
  if (token.kind === 'ident' || token.kind === 'string') return JSON.stringify(token.text.slice(0, 40));
  return JSON.stringify(token.kind);
}

/** Traefik nests parentheses; deeper than this is not a real rule and would risk the stack. */
const MAX_RULE_DEPTH = 100;

function traefikHostnames(rule: string): TagHostnames {
  const mentionsHost = /\bhost[a-z]*\s*\(/i.test(rule);
  let depth = 0;
  let maxDepth = 0;
  for (const char of rule) {
    if (char === '(') maxDepth = Math.max(maxDepth, ++depth);
    else if (char === ')') depth -= 1;
  }
  try {
    if (maxDepth > MAX_RULE_DEPTH) throw new RuleSyntaxError('parentheses are nested too deeply');
    const parser = new RuleParser(tokenize(rule));
    parser.parse();
    const problem = parser.problems[0];
    return problem === undefined ? { names: parser.names } : malformed(problem, parser.names);
  } catch (err) {
    if (!(err instanceof RuleSyntaxError)) throw err;
    // A broken rule that names no host is Traefik's problem, not a hostname we were asked for.
    return mentionsHost ? malformed(`traefik rule cannot be parsed: ${err.message}`) : nothing();
  }
}
