import { sqlLiteral } from '../../db/literal';

/**
 * Typed SQL literals for the statements this folder sends with
 * queryAsTenant (one round trip, the simple protocol, so no parameters).
 */

export const literal = (value: string | number | null): string => sqlLiteral(value);

export const uuidArray = (values: readonly string[]): string => `${sqlLiteral(values)}::uuid[]`;

export const textArray = (values: ReadonlyArray<string | null>): string =>
  values.length === 0 ? `'{}'::text[]` : `array[${values.map((value) => sqlLiteral(value)).join(', ')}]::text[]`;

export const intArray = (values: ReadonlyArray<number | null>): string =>
  values.length === 0 ? `'{}'::int[]` : `array[${values.map((value) => (value === null ? 'null' : String(Math.trunc(value)))).join(', ')}]::int[]`;
