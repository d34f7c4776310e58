// The /coordinates WebSocket: resumes after a drop, checks that seq is contiguous.
//
// Frames are handed to `onFrame` in order. After a drop the stream reconnects with
// exponential backoff and `?since=<last seq>`: the server replays what was missed or, when
// its history does not reach back, sends a snapshot. A frame whose seq is not one more than
// the last means something was lost: the stream asks for a snapshot to resync.

const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 10_000;
const PING_AFTER_MS = 5_000; // silence this long: ask the server whether it is still there
const DEAD_AFTER_MS = 15_000; // silence this long: the connection is half-open, drop it
const RECENT = 256;

export class CoordinateStream {
  /**
   * @param {string} url ws(s)://host/coordinates
   * @param {{onFrame: (frame: object) => void, onStatus: (stream: CoordinateStream) => void,
   *   protocols?: () => string[] | undefined, onExpired?: () => void}} handlers
   *   `protocols`: the subprotocols of each new socket (they carry a login's token);
   *   `onExpired`: the server closed the socket because the token expired.
   */
  constructor(url, { onFrame, onStatus, protocols = () => undefined, onExpired = () => {} }) {
    this.url = url;
    this.onFrame = onFrame;
    this.onStatus = onStatus;
    this.protocols = protocols;
    this.onExpired = onExpired;
    this.status = "connecting";
    this.lastSeq = null;
    this.epoch = null; // of the server run `lastSeq` belongs to, from its snapshot
    this.retryAt = 0;
    this.counts = { connects: 0, frames: 0, snapshots: 0, gaps: 0 };
    this.recent = []; // the last RECENT frames: {seq, type, at} (for the debug hook)
    this._socket = null;
    this._attempt = 0;
    this._timer = 0;
    this._lastMessage = 0;
    this._awaitingSnapshot = false;
    this._losing = 0;
    this._losingType = null;
    setInterval(() => this._watch(), 1000);
  }

  start() {
    this._connect();
  }

  /** Close the socket as a network failure would, and stay away for `holdMs`. */
  drop(holdMs = 0) {
    const socket = this._socket;
    if (!socket) return;
    this._detach(socket);
    socket.close();
    this._scheduleReconnect(holdMs);
  }

  /** While waiting to reconnect, connect now rather than when the backoff says (after a login). */
  retryNow() {
    if (this.status === "reconnecting") this._connect();
  }

  /** Discard the next `count` frames (of `type` only, when given) as if the network had lost
   * them. */
  loseFrames(count, type = null) {
    this._losing += count;
    this._losingType = type;
  }

  _connect() {
    clearTimeout(this._timer);
    // Frames lost before a drop cannot be replayed: a resync still pending needs a snapshot.
    const resume = this.lastSeq !== null && !this._awaitingSnapshot;
    // The epoch names the server run the seq belongs to; another run answers with a snapshot.
    const url = resume ? `${this.url}?since=${this.lastSeq}&epoch=${this.epoch}` : this.url;
    const socket = new WebSocket(url, this.protocols());
    this._socket = socket;
    this._setStatus("connecting");
    socket.onopen = () => {
      this.counts.connects += 1;
      this._lastMessage = performance.now();
      this._setStatus("live");
    };
    socket.onmessage = (event) => this._receive(event.data);
    socket.onclose = (event) => {
      this._detach(socket);
      this._scheduleReconnect();
      if (event.code === 1008 && event.reason === "token expired") this.onExpired();
    };
    // A failed connection also fires `close`, which reconnects; nothing more to do here.
    socket.onerror = () => {};
  }

  _detach(socket) {
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
    if (this._socket === socket) this._socket = null;
  }

  _scheduleReconnect(atLeastMs = 0) {
    const backoff = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** this._attempt);
    // Jitter keeps a room full of dashboards from reconnecting in lockstep after a restart.
    const delay = Math.max(atLeastMs, backoff * (0.8 + Math.random() * 0.4));
    this._attempt += 1;
    this.retryAt = Date.now() + delay;
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._connect(), delay);
    this._setStatus("reconnecting");
  }

  _receive(text) {
    this._lastMessage = performance.now();
    const frame = JSON.parse(text);
    if (frame.type === "pong") return;
    if (frame.type === "error") {
      console.warn("iotstream server:", frame.reason);
      return;
    }
    if (this._losing > 0 && (this._losingType === null || frame.type === this._losingType)) {
      this._losing -= 1;
      return;
    }
    // Only a frame that arrives proves the connection useful: until then keep backing off.
    this._attempt = 0;
    if (frame.type === "snapshot") {
      this.epoch = frame.epoch;
      this._awaitingSnapshot = false;
      this.counts.snapshots += 1;
    } else if (this.lastSeq !== null) {
      if (frame.seq <= this.lastSeq) return; // already applied
      if (frame.seq !== this.lastSeq + 1) this._resync();
    }
    this.lastSeq = frame.seq;
    this.counts.frames += 1;
    this.recent.push({ seq: frame.seq, type: frame.type, at: Date.now() });
    if (this.recent.length > RECENT) this.recent.splice(0, this.recent.length - RECENT);
    this.onFrame(frame);
  }

  _resync() {
    this.counts.gaps += 1;
    // Later frames are still newer than what we hold, so they are applied while we wait.
    if (this._awaitingSnapshot) return;
    this._awaitingSnapshot = true;
    this._send({ type: "snapshot" });
  }

  _send(message) {
    if (this._socket?.readyState === WebSocket.OPEN) this._socket.send(JSON.stringify(message));
  }

  _watch() {
    if (this.status !== "live") {
      this.onStatus(this); // the retry countdown moves on
      return;
    }
    const silent = performance.now() - this._lastMessage;
    if (silent > DEAD_AFTER_MS) this.drop();
    else if (silent > PING_AFTER_MS) this._send({ type: "ping" });
  }

  _setStatus(status) {
    this.status = status;
    this.onStatus(this);
  }
}
