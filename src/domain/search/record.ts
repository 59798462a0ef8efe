import { bySlot, type RedisClient } from '../../redis';
import { STREAM_MAX_LENGTH, streamKey, type SearchEvent } from '../analytics/stream';
import { searchCounterKey } from './counter';

/**
 * KEYS: the tenants' search counters, then the analytics stream when there
 * are events. ARGV: the number of counters, what to add to each, the
 * stream's approximate cap, then the events. Each write is a pcall, so no failure stops the others.
 * Answers how many events Redis refused.
 */
const RECORD = `
local counters = tonumber(ARGV[1])
for i = 1, counters do redis.pcall('INCRBY', KEYS[i], ARGV[i + 1]) end
local refused = 0
for i = counters + 3, #ARGV do
  local added = redis.pcall('XADD', KEYS[counters + 1], 'MAXLEN', '~', ARGV[counters + 2], '*', 'event', ARGV[i])
  if type(added) == 'table' and added.err then refused = refused + 1 end
end
return refused`;

const RECORD_COMMAND = 'ragworksRecordSearches';

type RecordCommand = Record<typeof RECORD_COMMAND, (numberOfKeys: number, ...keysThenArgs: Array<string | number>) => Promise<number>>;

/**
 * What served searches leave in Redis — each tenant's search counter, and
 * each search's event on the analytics stream — written after the replies,
 * in one command for all the searches answered in the same turn of the
 * event loop, that nobody waits for. Counting must never slow or fail a
 * search; an event Redis refuses is dropped and `onDropped` counts it.
 */
export class SearchRecorder {
  private counts = new Map<string, number>();
  private events: string[] = [];
  private scheduled = false;

  constructor(
    private readonly redis: RedisClient,
    private readonly prefix: string,
    private readonly onDropped: (events: number) => void,
  ) {}

  /** One search served for the tenant, with its event when analytics are on. */
  record(tenantId: string, event: SearchEvent | null): void {
    this.counts.set(tenantId, (this.counts.get(tenantId) ?? 0) + 1);
    if (event) this.events.push(JSON.stringify(event));
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    const { counts, events } = this;
    this.counts = new Map();
    this.events = [];
    this.scheduled = false;
    if (!(RECORD_COMMAND in this.redis)) this.redis.defineCommand(RECORD_COMMAND, { lua: RECORD });
    const stream = streamKey(this.prefix);
    const writes = [...counts].map(([tenantId, count]) => ({ key: searchCounterKey(this.prefix, tenantId), count }));
    // One script on a single server. On a cluster a script touches one slot: one per tenant's slot, the events in the stream's.
    for (const group of bySlot(this.redis, [...writes, { key: stream, count: 0 }], (write) => write.key)) {
      const counters = group.filter((write) => write.key !== stream);
      const sent = counters.length < group.length ? events : [];
      if (counters.length === 0 && sent.length === 0) continue;
      const keys = [...counters.map((write) => write.key), ...(sent.length > 0 ? [stream] : [])];
      (this.redis as unknown as RecordCommand)
        [RECORD_COMMAND](keys.length, ...keys, counters.length, ...counters.map((write) => write.count), STREAM_MAX_LENGTH, ...sent)
        .then(
          (refused) => {
            if (refused > 0) this.onDropped(refused);
          },
          () => {
            if (sent.length > 0) this.onDropped(sent.length);
          },
        );
    }
  }
}
