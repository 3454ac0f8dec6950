/**
 * Catalog snapshots: `/v1/catalog/services` answers (service name → tags) in the canonical form
 * the rest of the engine compares, services by name and each tag list sorted without repeats, our
 * own registrations left out.
 *
 * `ServiceNormalizer.read` takes the answer as bytes, one answer after another. Consul lists a
 * service's tags in a new order in every answer (docs/protocols.md §1.3), so an unchanged catalog
 * never comes back as the same bytes; but at 2,000 services and 10,000 names, decoding and parsing
 * every answer (1.2 MB, half of it our own route lists) made garbage that the collector spent more
 * time on than the change itself. The reader walks the bytes instead: a service whose tags are the
 * ones it had (in any order) is matched against the previous sorted array without making a string,
 * our own lists are skipped, and only a new or changed service's tags are decoded. An answer in
 * which nothing changed gives back the previous snapshot itself.
 */

/** Sorted copy: services by name, each tag list sorted and without duplicates; `ignore` left out. */
export function normalizeServices(
  services: Record<string, readonly string[] | null | undefined>,
  ignore: ReadonlySet<string> = new Set(),
): Record<string, string[]> {
  return new ServiceNormalizer(ignore).normalize(services);
}

/** `sorted` without repeats (the same array when it has none). */
function unique(sorted: string[]): string[] {
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i] === sorted[i - 1]) return sorted.filter((value, j) => j === 0 || value !== sorted[j - 1]);
  }
  return sorted;
}

function sameStrings(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((value, i) => value === b[i]);
}

/** Whether two normalized snapshots are the same; a service whose tags did not change shares its array. */
export function sameServices(a: Record<string, string[]>, b: Record<string, string[]>): boolean {
  if (a === b) return true;
  const names = Object.keys(a);
  if (names.length !== Object.keys(b).length) return false;
  return names.every((name) => {
    const tags = b[name];
    return tags !== undefined && (a[name] === tags || sameStrings(a[name] ?? [], tags));
  });
}

/**
 * Whether `tags` (in any order, repeats allowed) hold exactly the strings of `sorted` (sorted, no
 * repeats), without allocating for the few tags a service usually has.
 */
function sameTagSet(tags: readonly string[], sorted: readonly string[]): boolean {
  if (tags.length < sorted.length) return false;
  if (tags.length > SMALL_TAG_LIST) return sameStrings(unique([...tags].sort()), sorted);
  for (const tag of tags) if (!sorted.includes(tag)) return false;
  for (const tag of sorted) if (!tags.includes(tag)) return false;
  return true;
}

/** Up to this many tags, tag lists are compared by look-ups instead of sorting a copy. */
const SMALL_TAG_LIST = 16;

/** The most tags of one service the byte reader matches without decoding (one bit each). */
const MATCHED_BITS = 31;

/**
 * normalizeServices for a stream of answers: a service whose tags come back as they were (in
 * whatever order Consul lists them this time) keeps the sorted array of the previous answer, so
 * sameServices and the desired set compare it by reference and parse nothing again; an answer in
 * which nothing changed gives back the previous snapshot itself.
 */
export class ServiceNormalizer {
  /** The last snapshot given out. */
  private previous = Object.create(null) as Record<string, string[]>;
  private previousCount = 0;
  /** Every key of the last answer read as bytes (ours too), sorted as it came. */
  private keys: string[] = [];
  /** Scratch space of `read`, kept from one answer to the next. */
  private readonly answerKeys: string[] = [];
  private readonly names: string[] = [];
  private readonly lists: string[][] = [];
  private starts = new Int32Array(64);
  private ends = new Int32Array(64);

  constructor(private readonly ignore: ReadonlySet<string>) {}

  /** How many services the last snapshot given out holds. */
  get serviceCount(): number {
    return this.previousCount;
  }

  normalize(services: Record<string, readonly string[] | null | undefined>): Record<string, string[]> {
    const names = Object.keys(services).filter((name) => !this.ignore.has(name));
    if (names.length === this.previousCount && names.every((name) => this.unchanged(name, services[name]))) {
      return this.previous;
    }
    // No prototype (here and in `previous`): a service may be called `__proto__`.
    const out = Object.create(null) as Record<string, string[]>;
    for (const name of names.sort()) {
      const tags = services[name] ?? [];
      const before = this.previous[name];
      out[name] = before !== undefined && sameTagSet(tags, before) ? before : unique([...tags].sort());
    }
    this.keep(out, names.length);
    return out;
  }

  /**
   * The snapshot of one `/v1/catalog/services` answer given as bytes (undefined or empty: no
   * services). Consul writes the answer as one object of name → array of strings (or null),
   * compact, or indented by a dev agent; that shape is read byte by byte, anything else is parsed
   * whole. Throws a SyntaxError for an answer that is not JSON.
   */
  read(body: Buffer | undefined): Record<string, string[]> {
    if (body === undefined || body.length === 0) return this.normalize({});
    const scanned = this.scan(body);
    if (scanned !== undefined) return scanned;
    const parsed = JSON.parse(body.toString('utf8')) as Record<string, string[] | null> | null;
    return this.normalize(parsed ?? {});
  }

  private keep(snapshot: Record<string, string[]>, count: number): void {
    this.previous = snapshot;
    this.previousCount = count;
  }

  private unchanged(name: string, tags: readonly string[] | null | undefined): boolean {
    const before = this.previous[name];
    return before !== undefined && sameTagSet(tags ?? [], before);
  }

  /**
   * The snapshot of an answer in Consul's shape (one object, keys sorted, compact or indented);
   * undefined when `body` is not one (it is then parsed whole).
   */
  private scan(body: Buffer): Record<string, string[]> | undefined {
    // Scratch arrays are written from 0 and never shortened, so an answer allocates none of them.
    const { answerKeys, names, lists } = this;
    let keyCount = 0;
    let nameCount = 0;
    let changed = false;
    // The keys come sorted (Consul's encoder sorts them), mostly the ones of the last answer: the
    // next one expected is compared in place, and only a key that is not it is decoded.
    let expected = 0;
    let keysMoved = false;
    let at = space(body, 0);
    if (body[at] !== OPEN_BRACE) return undefined;
    at = space(body, at + 1);
    if (body[at] === CLOSE_BRACE) {
      at++;
    } else {
      for (;;) {
        // "name":
        if (body[at] !== QUOTE) return undefined;
        const nameEnd = stringEnd(body, at + 1);
        if (nameEnd < 0) return undefined;
        let name = this.keys[expected];
        if (name !== undefined && plainBytesEqual(body, at + 1, nameEnd, name)) {
          expected++;
        } else {
          name = decodeString(body, at + 1, nameEnd);
          keysMoved = true;
          // Both lists are sorted: the keys passed over left the catalog.
          while (expected < this.keys.length && this.keys[expected]! < name) expected++;
          if (this.keys[expected] === name) expected++;
        }
        // Keys out of order (or repeated): JSON.parse decides what the answer says.
        if (keyCount > 0 && !(answerKeys[keyCount - 1]! < name)) return undefined;
        answerKeys[keyCount++] = name;
        at = space(body, nameEnd + 1);
        if (body[at] !== COLON) return undefined;
        at = space(body, at + 1);
        const skip = this.ignore.has(name);
        // null, or [ "tag", ... ]
        let count = 0;
        if (body[at] === N_LOWER) {
          if (body.toString('latin1', at, at + 4) !== 'null') return undefined;
          at += 4;
        } else {
          if (body[at] !== OPEN_BRACKET) return undefined;
          at = space(body, at + 1);
          if (body[at] === CLOSE_BRACKET) {
            at++;
          } else {
            for (;;) {
              if (body[at] !== QUOTE) return undefined;
              const end = stringEnd(body, at + 1);
              if (end < 0) return undefined;
              if (!skip) this.remember(count++, at + 1, end);
              at = space(body, end + 1);
              if (body[at] === COMMA) {
                at = space(body, at + 1);
                continue;
              }
              if (body[at++] !== CLOSE_BRACKET) return undefined;
              break;
            }
          }
        }
        if (!skip) {
          const before = this.previous[name];
          const tags =
            (before !== undefined ? this.matched(body, count, before) : undefined) ?? this.decoded(body, count, before);
          if (tags !== before) changed = true;
          names[nameCount] = name;
          lists[nameCount++] = tags;
        }
        at = space(body, at);
        if (body[at] === COMMA) {
          at = space(body, at + 1);
          continue;
        }
        if (body[at++] !== CLOSE_BRACE) return undefined;
        break;
      }
    }
    if (space(body, at) !== body.length) return undefined;
    if (keysMoved || keyCount !== this.keys.length) {
      this.keys = answerKeys.slice(0, keyCount);
    }
    if (!changed && nameCount === this.previousCount) return this.previous;
    // No prototype: a service may be called `__proto__`. The names are sorted already.
    const out = Object.create(null) as Record<string, string[]>;
    for (let i = 0; i < nameCount; i++) out[names[i]!] = lists[i]!;
    this.keep(out, nameCount);
    return out;
  }

  /** Records where tag `i` of the current service lies in the answer (its contents, quotes excluded). */
  private remember(i: number, start: number, end: number): void {
    if (i >= this.starts.length) {
      const starts = new Int32Array(this.starts.length * 2);
      const ends = new Int32Array(this.ends.length * 2);
      starts.set(this.starts);
      ends.set(this.ends);
      this.starts = starts;
      this.ends = ends;
    }
    this.starts[i] = start;
    this.ends[i] = end;
  }

  /**
   * `before` when the `count` tags just remembered are exactly its strings in some order (and
   * written plainly: printable ASCII, no escapes), without decoding them; otherwise undefined.
   */
  private matched(body: Buffer, count: number, before: string[]): string[] | undefined {
    if (count !== before.length || count > MATCHED_BITS) return undefined;
    let taken = 0;
    for (let i = 0; i < count; i++) {
      const start = this.starts[i]!;
      const end = this.ends[i]!;
      let found = -1;
      for (let j = 0; j < count; j++) {
        if ((taken & (1 << j)) === 0 && plainBytesEqual(body, start, end, before[j]!)) {
          found = j;
          break;
        }
      }
      if (found < 0) return undefined;
      taken |= 1 << found;
    }
    return before;
  }

  /** The `count` tags just remembered, decoded, sorted and without repeats; `before` when they are its strings. */
  private decoded(body: Buffer, count: number, before: string[] | undefined): string[] {
    const tags: string[] = [];
    for (let i = 0; i < count; i++) tags.push(decodeString(body, this.starts[i]!, this.ends[i]!));
    const sorted = unique(tags.sort());
    return before !== undefined && sameStrings(sorted, before) ? before : sorted;
  }
}

/** The index of the quote that closes the string whose contents start at `from`; -1 if none. */
function stringEnd(body: Buffer, from: number): number {
  let at = from;
  for (;;) {
    const quote = body.indexOf(QUOTE, at);
    if (quote < 0) return -1;
    let backslashes = 0;
    while (quote - backslashes - 1 >= from && body[quote - backslashes - 1] === BACKSLASH) backslashes++;
    if (backslashes % 2 === 0) return quote;
    at = quote + 1;
  }
}

/** The string whose contents lie in `body[start, end)`. */
function decodeString(body: Buffer, start: number, end: number): string {
  for (let i = start; i < end; i++) {
    const c = body[i]!;
    if (c === BACKSLASH || c < 0x20 || c >= 0x7f)
      return JSON.parse(body.toString('utf8', start - 1, end + 1)) as string;
  }
  return body.toString('latin1', start, end);
}

/** Whether `body[start, end)` is `text`, written as printable ASCII without escapes. */
function plainBytesEqual(body: Buffer, start: number, end: number, text: string): boolean {
  if (end - start !== text.length) return false;
  for (let i = 0; i < text.length; i++) {
    const c = body[start + i]!;
    if (c !== text.charCodeAt(i) || c === BACKSLASH || c < 0x20 || c >= 0x7f) return false;
  }
  return true;
}

/** The first index from `at` that is not JSON whitespace (Consul's dev agent indents its answers). */
function space(body: Buffer, at: number): number {
  let i = at;
  for (;;) {
    const c = body[i];
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) return i;
    i++;
  }
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const N_LOWER = 0x6e;
