import { recheckDelayMs } from '../../src/domain/tenants/suspension';

describe("a suspended tenant's held job", () => {
  it('looks again after a minute, then twice as long each time, never more than an hour apart', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8, 50].map(recheckDelayMs)).toEqual([60_000, 120_000, 240_000, 480_000, 960_000, 1_920_000, 3_600_000, 3_600_000, 3_600_000]);
    // A job picked up for the first time ever (no count yet) waits the first minute too.
    expect(recheckDelayMs(0)).toBe(60_000);
  });
});
