import { EventEmitter } from 'node:events';

/** One entry of GET /events, in the API's EventMessage shape. */
export interface EngineEvent {
  Type: 'container' | 'image' | 'network' | 'daemon' | 'volume';
  Action: string;
  Actor: { ID: string; Attributes: Record<string, string> };
  scope: 'local';
  time: number;
  timeNano: number;
  // Fields older clients (docker-compose 1.x) still read.
  status?: string;
  id?: string;
  from?: string;
}

/** Keeps a bounded history so `events --since` can replay recent events. */
export class EventBus {
  private readonly emitter = new EventEmitter();
  private readonly history: EngineEvent[] = [];

  constructor(private readonly keep = 1000) {
    this.emitter.setMaxListeners(0);
  }

  emit(type: EngineEvent['Type'], action: string, id: string, attributes: Record<string, string> = {}): void {
    const nowNs = BigInt(Date.now()) * 1_000_000n + process.hrtime.bigint() % 1_000_000n;
    const ev: EngineEvent = {
      Type: type, Action: action, Actor: { ID: id, Attributes: attributes }, scope: 'local',
      time: Number(nowNs / 1_000_000_000n), timeNano: Number(nowNs),
    };
    if (type === 'container' || type === 'image') {
      ev.status = action;
      ev.id = id;
      if (attributes.image) ev.from = attributes.image;
    }
    this.history.push(ev);
    if (this.history.length > this.keep) this.history.shift();
    this.emitter.emit('event', ev);
  }

  /** A network event with Docker's attributes; `extra` carries the container of connect/disconnect. */
  network(action: string, n: { Id: string; Name: string; Driver: string }, extra: Record<string, string> = {}): void {
    this.emit('network', action, n.Id, { ...extra, name: n.Name, type: n.Driver });
  }

  since(timeNano: number): EngineEvent[] {
    return this.history.filter((e) => e.timeNano >= timeNano);
  }

  subscribe(cb: (e: EngineEvent) => void): () => void {
    this.emitter.on('event', cb);
    return () => this.emitter.off('event', cb);
  }
}
