// takeover.js: a WebSocket that reconnects and resumes where it left off, for rooms of a
// takeover.Hub joined with envelope=True. One ES module, no build step, no dependency.
//
//   import { ResumingSocket } from "/takeover.js";
//   const socket = new ResumingSocket("/ws?room=lobby");
//   socket.addEventListener("message", (e) => show(e.data, e.offset));
//   socket.addEventListener("resync", (e) => reloadState(e.reason));
//   socket.send("hello");
//
// Messages arrive as the hub sends them to envelope members:
//   {"room": R, "offset": N, "data": D}         (bytes: D in base64, "binary": true)
//   {"room": R, "gap": [FIRST, LAST]}            (offsets this server knows were lost)
// Any other frame is passed on as it is (offset null). On each reconnect the URL gets
// since=<the last offset seen>, so the server replays what was missed (hub.join(..., since=)).
"use strict";

const CONNECTING = 0, OPEN = 1, CLOSING = 2, CLOSED = 3;

/** A message of the socket: `data` (a string, or an ArrayBuffer for bytes), `room`, `offset`. */
export class ResumingMessageEvent extends Event {
  constructor(data, room, offset) {
    super("message");
    this.data = data;
    this.room = room;
    this.offset = offset;
  }
}

/** The page must fetch fresh state: `reason` is "gap" (with `first`, `last`) or "not-resumed". */
export class ResyncEvent extends Event {
  constructor(reason, room, first, last) {
    super("resync");
    this.reason = reason;
    this.room = room;
    this.first = first;
    this.last = last;
  }
}

export class ResumingSocket extends EventTarget {
  static CONNECTING = CONNECTING;
  static OPEN = OPEN;
  static CLOSING = CLOSING;
  static CLOSED = CLOSED;

  /**
   * @param {string} url  ws://, wss://, or a path of this page's origin ("/ws?room=lobby").
   * @param {object} [options]
   * @param {number} [options.minDelay=250]  ms: the first reconnect waits 1-2x this, each next one twice as long.
   * @param {number} [options.maxDelay=10000]  ms: no wait is longer (they stay within its upper half).
   * @param {number} [options.maxBuffered=256]  sends kept while not connected; more are refused.
   * @param {string|string[]} [options.protocols]  WebSocket subprotocols.
   * @param {number|null} [options.since=null]  the offset to resume after on the first connect.
   */
  constructor(url, options = {}) {
    super();
    this.url = new URL(url, globalThis.location ? globalThis.location.href : undefined);
    if (this.url.protocol === "http:") this.url.protocol = "ws:";
    if (this.url.protocol === "https:") this.url.protocol = "wss:";
    this.minDelay = options.minDelay ?? 250;
    this.maxDelay = options.maxDelay ?? 10000;
    this.maxBuffered = options.maxBuffered ?? 256;
    this.protocols = options.protocols;
    /** The offset of the last message received (the `since` of the next connect), or null. */
    this.lastOffset = options.since ?? null;
    /** Connects made so far (the first included). */
    this.connects = 0;
    this._buffer = [];
    this._attempt = 0;
    this._timer = null;
    this._closed = false;
    this._ws = null;
    this._connect();
  }

  /** CONNECTING (also while waiting to reconnect), OPEN, CLOSING or CLOSED, as a WebSocket's. */
  get readyState() {
    if (this._closed) return this._ws && this._ws.readyState === CLOSING ? CLOSING : CLOSED;
    return this._ws && this._ws.readyState === OPEN ? OPEN : CONNECTING;
  }

  /** Messages waiting for the connection to come back. */
  get bufferedCount() {
    return this._buffer.length;
  }

  /**
   * Send now if open, else keep it for the reconnect. Returns false, and dispatches
   * "bufferfull", when `maxBuffered` messages are waiting already (the message is dropped).
   */
  send(data) {
    if (this._closed) throw new DOMException("send() after close()", "InvalidStateError");
    if (this._ws && this._ws.readyState === OPEN) {
      this._ws.send(data);
      return true;
    }
    if (this._buffer.length >= this.maxBuffered) {
      this.dispatchEvent(new Event("bufferfull"));
      return false;
    }
    this._buffer.push(data);
    return true;
  }

  /** Close for good: no reconnect follows. */
  close(code = 1000, reason = "") {
    this._closed = true;
    clearTimeout(this._timer);
    if (this._ws && this._ws.readyState <= OPEN) this._ws.close(code, reason);
  }

  _connect() {
    const url = new URL(this.url);
    if (this.lastOffset !== null) url.searchParams.set("since", String(this.lastOffset));
    const ws = this.protocols ? new WebSocket(url.href, this.protocols) : new WebSocket(url.href);
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    this.connects += 1;
    const resuming = this.lastOffset !== null; // this URL has since=
    let first = true;
    ws.onopen = () => {
      this._attempt = 0;
      this.dispatchEvent(new Event("open"));
      const waiting = this._buffer;
      this._buffer = [];
      for (const data of waiting) ws.send(data);
    };
    ws.onmessage = (event) => {
      const message = this._unwrap(event.data);
      if (message === null) return;
      if (message.offset !== null) {
        if (this.lastOffset !== null && message.offset <= this.lastOffset) return; // had it already
        if (first && resuming && this.lastOffset !== null && message.offset > this.lastOffset + 1) {
          // Resumed with since, and what followed it was not replayed: the server could not. (A page
          // that set lastOffset from fresh state it got meanwhile is not told again.)
          this.dispatchEvent(new ResyncEvent("not-resumed", message.room, this.lastOffset + 1, message.offset - 1));
        }
        first = false;
        this.lastOffset = message.offset;
      }
      this.dispatchEvent(new ResumingMessageEvent(message.data, message.room, message.offset));
    };
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      const close = new CloseEvent("close", { code: event.code, reason: event.reason, wasClean: event.wasClean });
      this.dispatchEvent(close);
      if (!this._closed) this._schedule();
    };
    ws.onerror = () => this.dispatchEvent(new Event("error"));
  }

  _schedule() {
    // Capped exponential backoff with jitter: a ceiling of min(maxDelay, 2 * minDelay * 2^attempt),
    // the wait drawn from its upper half ("equal jitter"): minDelay..2*minDelay, then twice that, ...
    // Pages cut off at once come back spread over each window, and every wait is at least minDelay.
    const ceiling = Math.min(this.maxDelay, this.minDelay * 2 ** (Math.min(this._attempt, 30) + 1));
    this._attempt += 1;
    const delay = ceiling / 2 + (Math.random() * ceiling) / 2;
    this.dispatchEvent(Object.assign(new Event("reconnecting"), { delay, attempt: this._attempt }));
    this._timer = setTimeout(() => this._connect(), delay);
  }

  _unwrap(raw) {
    if (typeof raw !== "string") return { data: raw, room: null, offset: null };
    let envelope;
    try {
      envelope = JSON.parse(raw);
    } catch {
      return { data: raw, room: null, offset: null };
    }
    if (envelope === null || typeof envelope !== "object" || !("room" in envelope)) {
      return { data: raw, room: null, offset: null };
    }
    if (Array.isArray(envelope.gap)) {
      const [gapFirst, gapLast] = envelope.gap;
      this.dispatchEvent(new ResyncEvent("gap", envelope.room, gapFirst, gapLast));
      return null;
    }
    let data = envelope.data;
    if (envelope.binary) {
      const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
      data = bytes.buffer;
    }
    return { data, room: envelope.room, offset: envelope.offset ?? null };
  }
}
