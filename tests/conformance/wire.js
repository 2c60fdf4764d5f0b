'use strict';
// The wire: the .proto files loaded, raw protobuf bytes for what the
// generated codecs cannot say (unknown fields and kinds), and a Connect call
// driven message by message.

const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

/** The swarm.v1 services and the control stream's codecs, from the .proto files under protosDir. */
function load(protosDir) {
  const definition = protoLoader.loadSync(
    ['swarm/v1/gateway.proto', 'swarm/v1/enroll.proto', 'swarm/v1/shell.proto'],
    // keepCase: field names as the spec writes them; longs as strings so that
    // Ping.seq and sent_at_unix_ns are echoed exactly (they exceed 2^53).
    { includeDirs: [protosDir], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true },
  );
  const connect = definition['swarm.v1.DroneGateway'].Connect;
  return {
    swarm: grpc.loadPackageDefinition(definition).swarm.v1,
    encodeAgentMessage: connect.requestSerialize,
    decodeControllerMessage: connect.responseDeserialize,
  };
}

const STATUS_NAMES = Object.fromEntries(Object.entries(grpc.status).map(([name, code]) => [code, name]));
const KEEPALIVE = {
  // docs/protocol.md §8: the same keepalive as the controller, no retries.
  'grpc.keepalive_time_ms': 10000,
  'grpc.keepalive_timeout_ms': 5000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.enable_retries': 0,
  // Each identity its own connection: bounds are counted per drone.
  'grpc.use_local_subchannel_pool': 1,
};

function varint(n) {
  const out = [];
  for (let rest = n; ; rest = Math.floor(rest / 128)) {
    if (rest < 128) {
      out.push(rest);
      return Buffer.from(out);
    }
    out.push(0x80 | (rest & 0x7f));
  }
}

/** Field `number` as a length-delimited field (wire type 2). */
function delimited(number, bytes) {
  return Buffer.concat([varint((number << 3) | 2), varint(bytes.length), bytes]);
}

/** An AgentMessage with a Hello, plus raw fields appended to the Hello (what a newer agent might send). */
function helloBytes(wire, hello, extraHelloFields = Buffer.alloc(0)) {
  const helloOnly = wire.encodeAgentMessage({ hello });
  // helloOnly is field 1 (the hello arm) and nothing else: unwrap, extend, wrap.
  let offset = 1;
  let size = 0;
  for (let shift = 0; ; shift += 7) {
    const byte = helloOnly[offset++];
    size += (byte & 0x7f) * 2 ** shift;
    if (byte < 0x80) break;
  }
  const body = Buffer.concat([helloOnly.subarray(offset, offset + size), extraHelloFields]);
  return delimited(1, body);
}

// -- waiting ---------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(what, predicate, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await predicate();
    if (last) return last;
    await sleep(30);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

// -- the control stream (§5) ------------------------------------------------------

/** A Connect call that takes messages as objects or raw bytes, and reads into a queue. */
class ControlStream {
  constructor(identity) {
    const { wire } = identity;
    this.client = new grpc.Client(identity.gateway, identity.credentials(), KEEPALIVE);
    this.call = this.client.makeBidiStreamRequest(
      '/swarm.v1.DroneGateway/Connect',
      (message) => (Buffer.isBuffer(message) ? message : wire.encodeAgentMessage(message)),
      wire.decodeControllerMessage,
    );
    this.received = [];
    this.taken = 0; // how many of received next() has handed out
    this.waiters = [];
    this.status = null;
    this.call.on('data', (message) => this.push(message));
    this.call.on('error', () => {}); // the status event carries the same
    this.call.on('status', (status) => {
      this.status = { code: status.code, name: STATUS_NAMES[status.code], details: status.details };
      this.push(null);
    });
  }

  push(message) {
    if (message !== null) this.received.push(message);
    for (const wake of this.waiters.splice(0)) wake();
  }

  write(message) {
    this.call.write(message);
  }

  /** The next message not yet taken, or null when the call ended or timeoutMs passed. */
  async next(timeoutMs = 5000) {
    const deadline = Date.now() + timeoutMs;
    while (this.taken >= this.received.length) {
      if (this.status) return null;
      const left = deadline - Date.now();
      if (left <= 0) return null;
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.received[this.taken++];
  }

  /** How the controller ended the call (waits for it). */
  async ended(timeoutMs = 5000) {
    await waitFor('the end of the call', () => this.status, timeoutMs);
    return this.status;
  }

  close() {
    this.call.cancel();
    this.client.close();
  }
}

module.exports = { load, STATUS_NAMES, KEEPALIVE, varint, delimited, helloBytes, ControlStream, sleep, waitFor };
