/**
 * API requests in flight, and a log line for each one that has had no answer long after it should
 * have had one, saying where the work on its container has got to. A hang seen only by a client
 * ("no answer within 45 s", once in CI) otherwise leaves nothing to go on. (Not AsyncLocalStorage:
 * on Node 20 it makes every promise of the process slower, measured 36 % outside a store and 3x
 * inside one; a container's progress is kept by the engine instead.)
 */
interface InFlight {
  readonly what: string;
  /** The container named by the path (/containers/{ref}/…), as the client wrote it. */
  readonly container?: string;
  readonly since: number;
  /** Threshold multiples already reported. */
  reports: number;
}

export class SlowRequests {
  private readonly inFlight = new Set<InFlight>();

  /** `describe` says where the work on a container has got to, or undefined for none known. */
  constructor(private readonly describe: (containerRef: string) => string | undefined) {}

  async track<T>(what: string, container: string | undefined, job: () => Promise<T>): Promise<T> {
    const r: InFlight = { what, ...(container ? { container } : {}), since: Date.now(), reports: 0 };
    this.inFlight.add(r);
    try {
      return await job();
    } finally {
      this.inFlight.delete(r);
    }
  }

  /**
   * Every `everyMs`, logs the requests in flight for longer than `thresholdMs`, again at each
   * further multiple of it. The timer does not keep berthd alive. Returns the function that stops it.
   */
  watch(log: (line: string) => void, thresholdMs: number, everyMs = Math.min(5000, thresholdMs)): () => void {
    const timer = setInterval(() => {
      const now = Date.now();
      for (const r of this.inFlight) {
        const due = Math.floor((now - r.since) / thresholdMs);
        if (due <= r.reports) continue;
        r.reports = due;
        let where: string | undefined;
        try {
          where = r.container ? this.describe(r.container) : undefined;
        } catch { /* an ambiguous or vanished reference: the request alone is said */ }
        log(`berthd: ${r.what} has had no answer for ${Math.round((now - r.since) / 1000)} s${where ? `; ${where}` : ''}`);
      }
    }, everyMs);
    timer.unref();
    return () => clearInterval(timer);
  }
}
