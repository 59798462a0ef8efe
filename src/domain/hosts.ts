/**
 * A host as every comparison sees it: lower case, without its port, without
 * the trailing dot of a fully qualified name, an IPv6 literal without its
 * brackets. `B.Example.COM.:8443`, `b.example.com.` and `b.example.com` are
 * one host; so are `[::1]:8080` and `::1`. Undefined for an empty host.
 */
export function normalHost(host: string | undefined): string | undefined {
  const value = host?.trim().toLowerCase();
  if (!value) return undefined;
  if (value.startsWith('[')) {
    const end = value.indexOf(']');
    return end > 1 ? value.slice(1, end) : undefined;
  }
  // One colon separates a port; several belong to an IPv6 address written without brackets.
  const colon = value.indexOf(':');
  const name = colon !== -1 && value.indexOf(':', colon + 1) === -1 ? value.slice(0, colon) : value;
  return name.replace(/\.$/, '') || undefined;
}
