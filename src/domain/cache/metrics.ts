import { Gauge, type Registry } from 'prom-client';
import type { SearchCache } from './search-cache';

/** `ragworks_cache_hit_ratio{tier}`: this process's search cache, read from its counters at scrape time. */
export function registerCacheMetrics(registry: Registry, cache: Pick<SearchCache, 'stats'>): void {
  new Gauge({
    name: 'ragworks_cache_hit_ratio',
    help: "Hits / lookups of this process's search cache, per tier and overall",
    labelNames: ['tier'] as const,
    registers: [registry],
    collect() {
      const stats = cache.stats();
      for (const [tier, value] of [['l1', stats.l1.hit_ratio], ['l2', stats.l2.hit_ratio], ['overall', stats.overall_hit_ratio]] as const) {
        this.set({ tier }, value ?? 0);
      }
    },
  });
}
