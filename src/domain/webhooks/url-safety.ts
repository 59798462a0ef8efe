import ipaddr from 'ipaddr.js';

/**
 * Why a webhook URL is refused when it is created, or null. Only what can be
 * told from the URL itself: a host name that resolves to a private address
 * is refused when the connection is made (see sender.ts), which also covers
 * DNS rebinding.
 */
export function unsafeUrlReason(url: string, allowPrivate: boolean): string | null {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return 'is not a valid URL';
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return 'must use http or https';
  if (parsed.username || parsed.password) return 'must not contain credentials';
  if (allowPrivate) return null;
  // A trailing dot names the same host (`localhost.` is localhost).
  const host = parsed.hostname.replace(/^\[|\]$/g, '').replace(/\.$/, '');
  if (host === 'localhost' || host.endsWith('.localhost')) return 'points at this machine (localhost)';
  if (ipaddr.isValid(host)) {
    const address = ipaddr.process(host);
    if (address.range() !== 'unicast') return `points at a non-public address (${address.toString()}, ${address.range()} range)`;
    // ipaddr.js calls the deprecated IPv4-compatible form (::a.b.c.d, ::/96) unicast, whatever IPv4 address it embeds.
    if (address.kind() === 'ipv6' && address.match(ipaddr.IPv6.parse('::'), 96)) {
      return `points at an IPv4-compatible IPv6 address (${address.toString()}, ::/96), which is not allowed`;
    }
  }
  return null;
}
