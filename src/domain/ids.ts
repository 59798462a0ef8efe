import { v7 as uuidv7 } from 'uuid';

/** Time-ordered UUIDs (v7): ids sort by creation, which keyset pagination relies on. */
export const newId = (): string => uuidv7();

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (value: string): boolean => UUID.test(value);
