/** Runs async jobs one at a time per key, in the order they were given; a failed job does not stop the next. */
export class KeyedQueue {
  private readonly tails = new Map<string, Promise<unknown>>();

  async run<T>(key: string, job: () => Promise<T>): Promise<T> {
    const next = (this.tails.get(key) ?? Promise.resolve()).then(job, job);
    const settled = next.catch(() => undefined);
    this.tails.set(key, settled);
    try {
      return await next;
    } finally {
      // The last job of a key takes its entry with it, so keys of removed objects do not pile up.
      if (this.tails.get(key) === settled) this.tails.delete(key);
    }
  }

  /** Resolves once the jobs queued on `key` so far have finished. */
  async settled(key: string): Promise<void> {
    await (this.tails.get(key) ?? Promise.resolve());
  }
}

/** One queue: jobs run one at a time, in the order they were given. */
export class SerialQueue {
  private readonly queue = new KeyedQueue();

  run<T>(job: () => Promise<T>): Promise<T> {
    return this.queue.run('', job);
  }
}

/**
 * Many shared holders or one exclusive one at a time: an exclusive request waits for the shared
 * ones in flight and holds back new ones until it is done.
 */
export class SharedExclusive {
  private shared = 0;
  private exclusive?: Promise<void>;
  private drained?: () => void;

  async withShared<T>(job: () => Promise<T>): Promise<T> {
    while (this.exclusive) await this.exclusive.catch(() => undefined);
    this.shared++;
    try {
      return await job();
    } finally {
      if (--this.shared === 0) this.drained?.();
    }
  }

  async withExclusive<T>(job: () => Promise<T>): Promise<T> {
    while (this.exclusive) await this.exclusive.catch(() => undefined);
    let done!: () => void;
    this.exclusive = new Promise<void>((r) => { done = r; });
    try {
      if (this.shared) await new Promise<void>((r) => { this.drained = r; });
      this.drained = undefined;
      return await job();
    } finally {
      this.exclusive = undefined;
      done();
    }
  }
}

/** Runs `job` on every item, at most `limit` at a time (each spawns a process: a scrape must not fork hundreds at once). */
export async function forEachLimited<T>(items: readonly T[], limit: number, job: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => { while (next < items.length) await job(items[next++]!); };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
