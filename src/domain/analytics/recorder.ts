import type { RedisClient } from '../../redis';
import { STREAM_MAX_LENGTH, streamKey, type SearchEvent } from './stream';

/**
 * KEYS: the analytics stream. ARGV: the stream's approximate cap, then the
 * events. Each XADD is a pcall, so one refused event does not stop the
 * others. Answers how many events Redis refused.
 */
const RECORD = `
local refused = 0
for i = 2, #ARGV do
  local added = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'event', ARGV[i])
  if type(added) == 'table' and added.err then refused = refused + 1 end
end
return refused`;

const RECORD_COMMAND = 'ragworksRecordSearches';

type RecordCommand = Record<typeof RECORD_COMMAND, (numberOfKeys: number, ...keysThenArgs: Array<string | number>) => Promise<number>>;

/**
 * Puts served searches' events on the analytics stream, after the replies:
 * one command for all the searches answered in the same turn of the event
 * loop, that nobody waits for. Recording must never slow or fail a search;
 * an event Redis refuses is dropped and `onDropped` counts it.
 */
export class SearchEventRecorder {
  private events: string[] = [];
  private scheduled = false;

  constructor(
    private readonly redis: RedisClient,
    private readonly prefix: string,
    private readonly onDropped: (events: number) => void,
  ) {}

  record(event: SearchEvent): void {
    this.events.push(JSON.stringify(event));
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    const events = this.events;
    this.events = [];
    this.scheduled = false;
    if (!(RECORD_COMMAND in this.redis)) this.redis.defineCommand(RECORD_COMMAND, { lua: RECORD });
    (this.redis as unknown as RecordCommand)[RECORD_COMMAND](1, streamKey(this.prefix), STREAM_MAX_LENGTH, ...events).then(
      (refused) => {
        if (refused > 0) this.onDropped(refused);
      },
      () => this.onDropped(events.length),
    );
  }
}
