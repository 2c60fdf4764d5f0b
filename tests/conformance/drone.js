'use strict';
// The conforming drone (docs/protocol.md §5, §6, §11): heartbeats, a Pong for
// every Ping, exec channels over Channels.Shell; and a way to stop reading.

const crypto = require('node:crypto');
const os = require('node:os');
const { spawn } = require('node:child_process');
const { STATUS_NAMES, KEEPALIVE, ControlStream } = require('./wire.js');

// The protocol's default: offline after ten silent intervals is then 10 s, more
// than this process or the controller stall on a loaded machine (at 100 ms, 1 s
// was not: js-a went offline in the middle of the deaf-drone check).
const HEARTBEAT_MS = 1000;

/** A Hello for identity, as the minimal drone of §11 fills it in. */
function hello(identity, fields = {}) {
  return {
    drone_id: identity.droneId,
    name: identity.name,
    cores: os.cpus().length,
    drone_type: 'DRONE_TYPE_UNKNOWN',
    network: 'lan',
    agent_version: 'conformance-js/1',
    heartbeat_interval_ms: HEARTBEAT_MS,
    hostname: os.hostname(),
    instance_id: identity.instanceId,
    process_started_at_unix_ns: String(BigInt(Date.now()) * 1000000n),
    drone_type_reason: 'a conformance client',
    protocol_revision: 1,
    features: ['channels.exec', 'unknown-kinds-ignored'],
    ...fields,
  };
}

/** The conforming drone: heartbeats, a pong for every ping, exec channels. */
class Drone {
  constructor(identity, helloMessage) {
    this.identity = identity;
    this.stream = new ControlStream(identity);
    this.pings = [];
    this.pongsSent = 0;
    this.channels = [];
    this.seq = 0;
    this.stream.write(helloMessage);
  }

  async start() {
    const first = await this.stream.next(10000);
    if (!first || first.body !== 'welcome') {
      throw new Error(`expected a Welcome, got ${first ? first.body : JSON.stringify(this.stream.status)}`);
    }
    this.welcome = first.welcome;
    this.beat = setInterval(() => this.heartbeat(), HEARTBEAT_MS);
    this.heartbeat();
    this.reading = this.read();
    return this.welcome;
  }

  heartbeat() {
    if (this.stream.status) return;
    this.seq += 1;
    const load = os.loadavg();
    this.stream.write({
      heartbeat: {
        seq: String(this.seq),
        sent_at_unix_ns: String(BigInt(Date.now()) * 1000000n),
        load1: load[0],
        load5: load[1],
        load15: load[2],
      },
    });
  }

  async read() {
    for (;;) {
      const message = await this.stream.next(60000);
      if (message === null) {
        if (this.stream.status) return;
        continue;
      }
      if (message.body === 'ping') {
        this.pings.push(message.ping);
        // Exactly what came: seq and sent_at_unix_ns as the strings they were decoded to.
        this.stream.write({ pong: { seq: message.ping.seq, sent_at_unix_ns: message.ping.sent_at_unix_ns, status: {} } });
        this.pongsSent += 1;
      } else if (message.body === 'open_channel') {
        this.channels.push(serveChannel(this.identity, message.open_channel));
      } else if (message.body === 'start_build') {
        const build = message.start_build;
        this.stream.write({
          build_event: { build_id: build.build_id, job_id: build.job_id, kind: 'REFUSED', reason: 'this drone does not build' },
        });
      }
      // Anything else (restart_service, a kind this drone does not know): ignored (§10).
    }
  }

  /** Stop reading the stream (heartbeats go on): pings pile up unanswered. */
  deafen() {
    this.stream.call.pause();
    this.deaf = true;
    this.stream.call.removeAllListeners('data');
    this.held = [];
    this.stream.call.on('data', (message) => this.held.push(message));
  }

  listen() {
    this.stream.call.removeAllListeners('data');
    this.stream.call.on('data', (message) => this.stream.push(message));
    for (const message of this.held) this.stream.push(message);
    this.deaf = false;
    this.stream.call.resume();
  }

  /** Half-close: the spec's way to say goodbye (§5.8). */
  async leave() {
    clearInterval(this.beat);
    this.stream.call.end();
    const status = await this.stream.ended(5000);
    this.stream.client.close();
    return status;
  }

  stop() {
    clearInterval(this.beat);
    this.stream.close();
  }
}

// -- channels (§6) ------------------------------------------------------------------

/** Open Channels.Shell for an OpenChannel, attach, run what it asks, close with the status. */
function serveChannel(identity, open) {
  const client = new identity.wire.swarm.Channels(identity.gateway, identity.credentials(), KEEPALIVE);
  const call = client.Shell();
  const done = new Promise((resolve) => {
    call.on('status', (status) => {
      client.close();
      resolve({ channel: open.channel_id, kind: open.kind, status: STATUS_NAMES[status.code], details: status.details });
    });
  });
  call.on('error', () => {});
  call.write({ attach: { channel_id: open.channel_id } });
  const finish = (close) => {
    call.write({ close });
    call.end();
  };
  if (open.kind !== 'EXEC') {
    finish({ reason: `this drone does not serve ${open.kind} channels`, error: '' });
    return done;
  }
  const child = spawn('sh', ['-c', open.command], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let timedOut = false;
  const timer =
    open.timeout_s > 0
      ? setTimeout(() => {
          timedOut = true;
          process.kill(-child.pid, 'SIGKILL');
        }, open.timeout_s * 1000)
      : null;
  child.stdout.on('data', (chunk) => call.write({ output: chunk }));
  child.stderr.on('data', (chunk) => call.write({ stderr: chunk }));
  call.on('data', (frame) => {
    if (frame.body === 'close' && child.exitCode === null) process.kill(-child.pid, 'SIGHUP');
  });
  child.on('close', (code, signal) => {
    if (timer) clearTimeout(timer);
    const number = signal ? os.constants.signals[signal] : 0;
    finish({
      exited: code !== null,
      exit_code: code === null ? 0 : code,
      signal: number,
      reason: timedOut ? `timed out after ${open.timeout_s}s` : code !== null ? `exited with ${code}` : `killed by ${signal}`,
      timed_out: timedOut,
      error: '',
    });
  });
  return done;
}

module.exports = { HEARTBEAT_MS, hello, Drone, serveChannel };
