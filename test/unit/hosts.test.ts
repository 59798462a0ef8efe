import { normalHost } from '../../src/domain/hosts';
import { customDomainOf } from '../../src/domain/tenants/tenants';

describe('host normalisation', () => {
  it.each([
    ['b.example.com', 'b.example.com'],
    ['B.Example.COM.', 'b.example.com'],
    ['b.example.com.:8080', 'b.example.com'],
    ['B.EXAMPLE.COM:443', 'b.example.com'],
    ['[::1]:8080', '::1'],
    ['[2001:DB8::1]', '2001:db8::1'],
    ['2001:db8::1', '2001:db8::1'],
    ['127.0.0.1:3000', '127.0.0.1'],
  ])('reads %s as %s', (host, normal) => {
    expect(normalHost(host)).toBe(normal);
  });

  it('has no host for an empty one', () => {
    for (const host of [undefined, '', ' ', '[]', ':8080', '.']) expect(normalHost(host)).toBeUndefined();
  });

  it('binds custom domains by the normal host, never addresses or single labels', () => {
    expect(customDomainOf('Docs.Acme.COM.:8443')).toBe('docs.acme.com');
    for (const host of ['localhost:8080', '127.0.0.1', '[::1]:8080', 'docs.acme.com..', undefined]) expect(customDomainOf(host)).toBeNull();
  });
});
