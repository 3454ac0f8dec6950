/** Types shared by tag parsing, hostname validation and the desired-set computation. */

/** A hostname some service asked for, after validation. */
export interface DeclaredHostname {
  hostname: string;
  /** Consul service names that declared it, sorted. */
  services: string[];
}

/** A name we refused, with why and who asked, for the log and the status API. */
export interface RejectedHostname {
  /** The text as declared (after tag parsing, before normalisation). */
  value: string;
  reason: string;
  service: string;
  tag: string;
}
