import { X509Certificate, createPrivateKey } from 'node:crypto';

/** Splits a PEM bundle into its certificates, leaf first. */
export function splitPem(bundle: string): X509Certificate[] {
  const blocks = bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((b) => new X509Certificate(b));
}

/** DNS names in the certificate's SAN extension. */
export function dnsNames(cert: X509Certificate): string[] {
  return (cert.subjectAltName ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.startsWith('DNS:'))
    .map((s) => s.slice(4))
    .sort();
}

/**
 * Whether `chainPem` (leaf + intermediates) chains to one of `rootsPem`: every certificate is
 * signed by the next, and the last by a root.
 */
export function chainsToRoot(chainPem: string, rootsPem: string): boolean {
  const chain = splitPem(chainPem);
  const roots = splitPem(rootsPem);
  if (chain.length === 0 || roots.length === 0) return false;
  for (let i = 0; i + 1 < chain.length; i++) {
    if (!chain[i]!.checkIssued(chain[i + 1]!) || !chain[i]!.verify(chain[i + 1]!.publicKey)) return false;
  }
  const last = chain[chain.length - 1]!;
  return roots.some((root) => last.checkIssued(root) && last.verify(root.publicKey));
}

export function keyMatches(certPem: string, keyPem: string): boolean {
  const leaf = splitPem(certPem)[0];
  return leaf !== undefined && leaf.checkPrivateKey(createPrivateKey(keyPem));
}
