/** UTC calendar days as `YYYY-MM-DD` strings: the unit of usage and billing. */

const DAY_MS = 24 * 60 * 60 * 1000;

export function dayOf(at: Date): string {
  return at.toISOString().slice(0, 10);
}

/** The first instant of `day`, UTC. */
export function startOf(day: string): Date {
  return new Date(`${day}T00:00:00.000Z`);
}

export function addDays(day: string, days: number): string {
  return dayOf(new Date(startOf(day).getTime() + days * DAY_MS));
}

/** Every day from `first` to `last`, both included; empty when `first` is after `last`. */
export function daysFrom(first: string, last: string): string[] {
  const days: string[] = [];
  for (let day = first; day <= last; day = addDays(day, 1)) days.push(day);
  return days;
}

/** Days from `first` to `last`, both included (0 when reversed). */
export function dayCount(first: string, last: string): number {
  return Math.max(0, Math.round((startOf(last).getTime() - startOf(first).getTime()) / DAY_MS) + 1);
}

/**
 * The first day whose raw rows a retention of `days` days has not touched
 * at `now`: retention deletes rows older than `now - days`, so a day that
 * starts at or after that instant is whole.
 */
export function firstWholeDay(now: Date, days: number): string {
  const cutoff = new Date(now.getTime() - days * DAY_MS);
  const day = dayOf(cutoff);
  return startOf(day).getTime() === cutoff.getTime() ? day : addDays(day, 1);
}

/** When `day` may be closed: its end plus the grace period for late events. */
export function closesAt(day: string, graceMinutes: number): Date {
  return new Date(startOf(addDays(day, 1)).getTime() + graceMinutes * 60_000);
}

/** The latest day whose close time has passed at `now`. */
export function lastClosableDay(now: Date, graceMinutes: number): string {
  return addDays(dayOf(new Date(now.getTime() - graceMinutes * 60_000)), -1);
}

export const laterDay = (a: string, b: string): string => (a > b ? a : b);
