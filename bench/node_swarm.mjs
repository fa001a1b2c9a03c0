#!/usr/bin/env node
/*
 * node_swarm: the v2 world swarm in Node.js, for swarms one Python core cannot read.
 *
 * What it is: `python -m bench.world_swarm --client raw --protocol v2` again, in one
 * Node process with nothing but Node's own modules (no npm). N players join their
 * characters over raw WebSockets speaking protocol v2 (MessagePack in binary frames,
 * docs/protocol.md "World, protocol v2"), move at --move-hz with increasing seq, and
 * the report has world_swarm's keys: snapshots/s per client, input latency (send seq
 * k -> the first snapshot whose own entry has seq >= k), kB/s, moves/s, frames
 * checked and failed, errors, closes, its own CPU, the server's (--server-pid), and
 * the zones' tick_ms from GET /v1/world/zones.
 *
 * Why: at N=2000 with everyone visible, each client gets 20 snapshots/s of ~8-30 KB,
 * 0.3-1.2 GB/s in all. The Python swarm's one core cannot decode that many v2 streams
 * (it saturates near 1000 such players), so past that it measures itself, not the
 * server. Here every socket delivers into one shared read buffer (net's `onread`: no
 * stream machinery, no Buffer per read), frames are parsed in place, and a snapshot
 * is read without building objects: a checked client reads it typed into flat arrays
 * (eids, seqs) and follows its view eid by eid, as bench/v2.py's Follower does; an
 * unchecked one finds its own entry with one byte search, as bench/v2.py's OwnEntry.
 * The typed read of a snapshot is kept for the clients given the very same bytes (the
 * server sends one frame to every player of a block: with everyone visible, one a
 * tick for all 2,000), each comparing its bytes whole with those read first (`snap`
 * below; --no-share reads every snapshot afresh). What is left per snapshot is mostly
 * the kernel's and libuv's: a read per socket per tick, and a write per move.
 *
 * It does not register users: the Python swarm prepares them (and refreshes their
 * tokens) in a users file. Run it once with the same --users-file and at least the
 * same -n (it may measure for a moment only), then this:
 *
 *   python -m bench.world_swarm --url http://127.0.0.1:18080 -n 2000 --client raw \
 *       --protocol v2 --users-file .swarm-users.json --duration 3
 *   node bench/node_swarm.mjs --url http://127.0.0.1:18080 -n 2000 \
 *       --users-file .swarm-users.json --check-every 20 --server-pid <pid>
 *
 * The server needs what world_swarm needs at that size: MAX_CONNECTIONS_PER_ADDRESS
 * above N (every player comes from one address). --check-every k decodes and follows
 * every frame of every k-th client whole (from its join on, the ramp included) and
 * answers one it cannot apply with a `resync`; the others only find their own entry.
 * Pin it to a core of its own (taskset -c 1 node ...) to read its CPU as "of a core".
 * SIGINT or SIGTERM while measuring ends the run early, with its report.
 */

import { Buffer, isUtf8 } from 'node:buffer';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const SUBPROTOCOL = 'outpost.v2'; // bench/v2.py SUBPROTOCOL
const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'; // RFC 6455's, for Sec-WebSocket-Accept
const SAMPLE_EVERY = 5; // snapshots between two samples of what a client sees (world_swarm's)
const RAMP_BATCH = 25; // players started at once while ramping (world_swarm's)
const JOIN_TIMEOUT_MS = 60_000; // world_swarm waits this long for everyone's welcome
const MAX_FRAME = 64 << 20; // a server frame larger than this is a broken stream, not data
const MAX_DEPTH = 64; // nesting of MessagePack containers (a v2 snapshot has 3 levels)
const CLK_TCK = 100; // /proc/PID/stat's clock ticks a second (SC_CLK_TCK on Linux)

// Opcodes (RFC 6455).
const CONTINUATION = 0x0, TEXT = 0x1, BINARY = 0x2, CLOSE = 0x8, PING = 0x9, PONG = 0xa;

// A v2 snapshot begins with these bytes (map of 7, "type": "snapshot"; docs/protocol.md),
// which tells it from every other message without decoding it (world_swarm's V2 does so).
const SNAPSHOT_PREFIX = Buffer.from('\x87\xa4type\xa8snapshot', 'latin1');
const UPDATE_KEY = Buffer.from('\xa6update', 'latin1');
const BASE_KEY = Buffer.from('\xa4base', 'latin1');
const ENTER_KEY = Buffer.from('\xa5enter', 'latin1');
const LEAVE_KEY = Buffer.from('\xa5leave', 'latin1');

// ---------------------------------------------------------------------------------------
// MessagePack: a decoder of what the server sends, and an encoder of what a client sends.
// ---------------------------------------------------------------------------------------

class DecodeError extends Error {}

/**
 * Reads MessagePack from buf[pos..end). Every read checks its bounds, and a container's
 * declared length is checked against the bytes left before anything is allocated for
 * it (each element takes at least one byte), so decoding is linear in the input
 * whatever a header claims. Covers nil, bool, ints (64-bit ones as Numbers: exact up
 * to 2^53), float32/64, str, bin, arrays and maps; ext types are refused.
 */
class Reader {
  constructor() {
    this.buf = null;
    this.pos = 0;
    this.end = 0;
    this.depth = 0; // containers open: decoding recurses, so their nesting is bounded
  }

  reset(buf, pos = 0, end = buf.length) {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
    this.depth = 0;
    return this;
  }

  /** Into a container (out of it: depth--): too deep is a DecodeError, not a stack overflow. */
  nest() {
    if (++this.depth > MAX_DEPTH) throw new DecodeError(`containers nested deeper than ${MAX_DEPTH}`);
  }

  need(n) {
    if (this.pos + n > this.end) throw new DecodeError(`cut short at byte ${this.pos} of ${this.end}`);
  }

  byte() {
    this.need(1);
    return this.buf[this.pos++];
  }

  unexpected(first, wanted) {
    return new DecodeError(`expected ${wanted}, found ${describe(first)} at byte ${this.pos - 1}`);
  }

  /** The length of a container of `n` elements, checked against the bytes left. */
  count(n) {
    if (n > this.end - this.pos) throw new DecodeError(`a container of ${n} elements in ${this.end - this.pos} bytes`);
    return n;
  }

  uintN(size) {
    this.need(size);
    const b = this.buf, at = this.pos;
    this.pos += size;
    switch (size) {
      case 1: return b[at];
      case 2: return b.readUInt16BE(at);
      case 4: return b.readUInt32BE(at);
      default: return b.readUInt32BE(at) * 0x1_0000_0000 + b.readUInt32BE(at + 4);
    }
  }

  intN(size) {
    this.need(size);
    const b = this.buf, at = this.pos;
    this.pos += size;
    switch (size) {
      case 1: return b.readInt8(at);
      case 2: return b.readInt16BE(at);
      case 4: return b.readInt32BE(at);
      default: return b.readInt32BE(at) * 0x1_0000_0000 + b.readUInt32BE(at + 4);
    }
  }

  /** An integer (any width, as msgspec's `int` takes): a float is not one. */
  int() {
    const first = this.byte();
    const n = this.intAfter(first);
    if (n === undefined) throw this.unexpected(first, 'an int');
    return n;
  }

  /** The integer `first` begins (a fixint, or 0xcc-0xcf unsigned and 0xd0-0xd3 signed of
   *  1, 2, 4 or 8 bytes), its bytes read; undefined if `first` begins none. */
  intAfter(first) {
    if (first < 0x80) return first;
    if (first >= 0xe0) return first - 0x100;
    if (first >= 0xcc && first <= 0xcf) return this.uintN(1 << (first - 0xcc));
    if (first >= 0xd0 && first <= 0xd3) return this.intN(1 << (first - 0xd0));
    return undefined;
  }

  /** Pass over a float (float32, float64, or an int, as msgspec's `float` takes). */
  skipFloat() {
    const first = this.byte();
    if (first === 0xca) return this.skipBytes(4);
    if (first === 0xcb) return this.skipBytes(8);
    if (first < 0x80 || first >= 0xe0 || (first >= 0xcc && first <= 0xd3)) {
      this.pos -= 1;
      this.int();
      return;
    }
    throw this.unexpected(first, 'a float');
  }

  /** A str's byte length; the reader is left at its first byte. */
  strLength() {
    const first = this.byte();
    let n;
    if ((first & 0xe0) === 0xa0) n = first & 0x1f;
    else if (first === 0xd9) n = this.uintN(1);
    else if (first === 0xda) n = this.uintN(2);
    else if (first === 0xdb) n = this.uintN(4);
    else throw this.unexpected(first, 'a str');
    this.need(n);
    return n;
  }

  /** A str, skipped after checking it is UTF-8. */
  skipStr() {
    const n = this.strLength(), at = this.pos;
    this.pos += n;
    if (!isUtf8(this.buf.subarray(at, at + n))) throw new DecodeError(`a str that is not UTF-8 at byte ${at}`);
  }

  arrayLength() {
    return this.containerLength(0x90, 0xdc, 'an array');
  }

  mapLength() {
    return this.containerLength(0x80, 0xde, 'a map');
  }

  /** A container's length: its fix form (`fix` | n), or `wide` (16-bit) or wide + 1 (32). */
  containerLength(fix, wide, what) {
    const first = this.byte();
    if ((first & 0xf0) === fix) return first & 0x0f;
    if (first === wide) return this.count(this.uintN(2));
    if (first === wide + 1) return this.count(this.uintN(4));
    throw this.unexpected(first, what);
  }

  isNil() {
    if (this.pos < this.end && this.buf[this.pos] === 0xc0) {
      this.pos += 1;
      return true;
    }
    return false;
  }

  /** Any value, as plain JS: maps are objects (without a prototype), bin a copied Buffer. */
  value() {
    const first = this.byte();
    const n = this.intAfter(first);
    if (n !== undefined) return n;
    if (first <= 0x8f) return this.mapOf(first & 0x0f);
    if (first <= 0x9f) return this.arrayOf(first & 0x0f);
    if (first <= 0xbf) return this.utf8(first & 0x1f);
    switch (first) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return this.bin(this.uintN(1));
      case 0xc5: return this.bin(this.uintN(2));
      case 0xc6: return this.bin(this.uintN(4));
      case 0xca: this.need(4); this.pos += 4; return this.buf.readFloatBE(this.pos - 4);
      case 0xcb: this.need(8); this.pos += 8; return this.buf.readDoubleBE(this.pos - 8);
      case 0xd9: return this.utf8(this.uintN(1));
      case 0xda: return this.utf8(this.uintN(2));
      case 0xdb: return this.utf8(this.uintN(4));
      case 0xdc: return this.arrayOf(this.count(this.uintN(2)));
      case 0xdd: return this.arrayOf(this.count(this.uintN(4)));
      case 0xde: return this.mapOf(this.count(this.uintN(2)));
      case 0xdf: return this.mapOf(this.count(this.uintN(4)));
      default: throw this.unexpected(first, 'a value (ext types are not used by v2)');
    }
  }

  /** A str of n bytes, checked to be UTF-8 as msgspec checks it. */
  utf8(n) {
    this.need(n);
    const at = this.pos;
    this.pos += n;
    const view = this.buf.subarray(at, at + n);
    if (!isUtf8(view)) throw new DecodeError(`a str that is not UTF-8 at byte ${at}`);
    return view.toString('utf8');
  }

  bin(n) {
    this.need(n);
    this.pos += n;
    return Buffer.from(this.buf.subarray(this.pos - n, this.pos)); // a copy: buf is reused
  }

  arrayOf(n) {
    this.count(n);
    this.nest();
    const out = new Array(n);
    for (let i = 0; i < n; i++) out[i] = this.value();
    this.depth--;
    return out;
  }

  /** A map as an object: its keys as String() writes them (v2's are str); an array or a
   *  map as a key is refused (String() of one throws, or names no key msgspec would). */
  mapOf(n) {
    this.count(n);
    this.nest();
    const out = Object.create(null);
    for (let i = 0; i < n; i++) {
      const at = this.pos;
      const key = this.value();
      if (key !== null && typeof key === 'object' && !Buffer.isBuffer(key)) {
        throw new DecodeError(`a map key that is ${Array.isArray(key) ? 'an array' : 'a map'} at byte ${at}`);
      }
      out[String(key)] = this.value();
    }
    this.depth--;
    return out;
  }

  /** Pass over one value of any type (a game's replicated field) without building it. */
  skip() {
    const first = this.byte();
    if (first < 0x80 || first >= 0xe0 || first === 0xc0 || first === 0xc2 || first === 0xc3) return;
    if (first <= 0x8f) return this.skipMany(2 * (first & 0x0f));
    if (first <= 0x9f) return this.skipMany(first & 0x0f);
    if (first <= 0xbf) return this.skipBytes(first & 0x1f);
    switch (first) {
      case 0xc4: case 0xd9: return this.skipBytes(this.uintN(1));
      case 0xc5: case 0xda: return this.skipBytes(this.uintN(2));
      case 0xc6: case 0xdb: return this.skipBytes(this.uintN(4));
      case 0xca: case 0xce: case 0xd2: return this.skipBytes(4);
      case 0xcb: case 0xcf: case 0xd3: return this.skipBytes(8);
      case 0xcc: case 0xd0: return this.skipBytes(1);
      case 0xcd: case 0xd1: return this.skipBytes(2);
      case 0xdc: return this.skipMany(this.count(this.uintN(2)));
      case 0xdd: return this.skipMany(this.count(this.uintN(4)));
      case 0xde: return this.skipMany(2 * this.count(this.uintN(2)));
      case 0xdf: return this.skipMany(2 * this.count(this.uintN(4)));
      default: throw this.unexpected(first, 'a value (ext types are not used by v2)');
    }
  }

  skipBytes(n) {
    this.need(n);
    this.pos += n;
  }

  skipMany(n) {
    this.count(n);
    this.nest();
    for (let i = 0; i < n; i++) this.skip();
    this.depth--;
  }
}

function describe(first) {
  return `0x${first.toString(16).padStart(2, '0')}`;
}

const reader = new Reader(); // one for the whole swarm: every message is read at once, start to end

/** One message (a map) decoded whole, as bench/v2.py `decode` does. */
function decodeMessage(payload) {
  reader.reset(payload);
  const message = reader.value();
  if (reader.pos !== reader.end) throw new DecodeError(`${reader.end - reader.pos} bytes after the message`);
  if (message === null || typeof message !== 'object' || Array.isArray(message) || Buffer.isBuffer(message)) {
    throw new DecodeError('a v2 message is a map');
  }
  return message;
}

const MAX_EID = 1 << 22; // eids are small (docs/protocol.md): views are tables indexed by them

/**
 * The typed read of the last snapshot read, in flat arrays reused for every snapshot of
 * every client (nothing is allocated per entry): the eids of `enter`, `update` and
 * `leave`, each update's seq by eid, and why the bytes did not decode (null: they did).
 *
 * It is kept with a copy of the bytes read, for the next client given the same bytes:
 * the server makes one frame for all the players of a block (the same view, the same
 * snapshot last sent), so with everyone visible the 2,000 clients of a tick get one
 * payload between them. A client compares its bytes whole with the kept ones (a
 * memcmp) before it uses the read, so it gets exactly what reading its own bytes would
 * give; only the read is shared, never a view: each checked client follows its own
 * (Follower), against its own tick and eids. --no-share reads every snapshot afresh.
 */
const snap = {
  bytes: Buffer.alloc(0), // a copy of the bytes read (a view of `backing`)
  backing: Buffer.alloc(64 << 10),
  fields: -1, // the game's fields it was read with
  why: null,
  tick: 0,
  base: null,
  enter: new Int32Array(1024), nEnter: 0,
  update: new Int32Array(1024), nUpdate: 0,
  leave: new Int32Array(1024), nLeave: 0,
  largestEid: -1, // of enter, update and leave; MAX_EID if one is out of 0..MAX_EID-1
  stamp: 0, // this read's number: seqOf[eid] is this read's where seqStamp[eid] === stamp
  seqOf: new Float64Array(1024),
  seqStamp: new Uint32Array(1024),
  reads: 0, // typed reads done (the others were shared)
};

function grow(array, n) {
  if (n <= array.length) return array;
  const bigger = new array.constructor(Math.max(n, 2 * array.length));
  bigger.set(array);
  return bigger;
}

/**
 * Read `payload`, a snapshot, into `snap` (unless it holds the read of these very bytes
 * already, and `share`); why it does not decode, or null.
 */
function readSnapshot(payload, fields, share = true) {
  if (share && holds(payload, fields)) return snap.why;
  snap.reads++;
  snap.stamp++;
  try {
    readTyped(payload, fields);
    snap.why = null;
  } catch (exc) {
    if (!(exc instanceof DecodeError)) throw exc;
    snap.why = `does not decode: ${exc.message}`;
  }
  snap.fields = fields;
  if (share) {
    if (payload.length > snap.backing.length) snap.backing = Buffer.alloc(2 * payload.length);
    payload.copy(snap.backing);
    snap.bytes = snap.backing.subarray(0, payload.length);
  } else {
    snap.bytes = Buffer.alloc(0);
  }
  return snap.why;
}

/** Whether `snap` holds the read of these very bytes (with as many fields). */
function holds(payload, fields) {
  return snap.fields === fields && snap.bytes.length === payload.length && payload.equals(snap.bytes);
}

/** The seq of `eid`'s update entry in the snapshot read (it decoded), or -1. */
function seqOf(eid) {
  return eid >= 0 && eid < snap.seqStamp.length && snap.seqStamp[eid] === snap.stamp ? snap.seqOf[eid] : -1;
}

/** An eid read, as a table index: -1 (and the read's largest eid MAX_EID) if it is not one. */
function eidOf(value) {
  if (value >= 0 && value < MAX_EID) {
    if (value > snap.largestEid) snap.largestEid = value;
    return value;
  }
  snap.largestEid = MAX_EID;
  return -1;
}

/**
 * The typed read, as bench/v2.py `snapshots(fields)` types a snapshot: a map with `type`
 * str, `zone` str, `tick` int, `base` int or nil, `enter` [[int, str, str]...], `update`
 * [[int, float, float, int, <fields> any]...], `leave` [int...]; keys in any order,
 * others passed over, none of these missing, nothing after it. Throws DecodeError. Unlike
 * msgspec's Any, a field's value may not be (or hold) an ext type or a map keyed by an
 * array: v2's fields are scalars (docs/protocol.md).
 */
function readTyped(payload, fields) {
  const r = reader.reset(payload);
  const width = 4 + fields;
  let seen = 0; // a bit per required key
  snap.base = null;
  snap.nEnter = snap.nUpdate = snap.nLeave = 0;
  snap.largestEid = -1;
  for (let keys = r.mapLength(); keys > 0; keys--) {
    const n = r.strLength();
    const key = payload.toString('latin1', r.pos, r.pos + n); // keys are ASCII; a non-matching one is skipped
    r.pos += n;
    switch (key) {
      case 'type': r.skipStr(); seen |= 1; break;
      case 'zone': r.skipStr(); seen |= 2; break;
      case 'tick': snap.tick = r.int(); seen |= 4; break;
      case 'base': snap.base = r.isNil() ? null : r.int(); seen |= 8; break;
      case 'enter': {
        const count = r.arrayLength();
        snap.enter = grow(snap.enter, count);
        for (let i = 0; i < count; i++) {
          if (r.arrayLength() !== 3) throw new DecodeError(`an enter entry is not of 3 at byte ${r.pos}`);
          snap.enter[i] = eidOf(r.int());
          r.skipStr(); // character id
          r.skipStr(); // name
        }
        snap.nEnter = count;
        seen |= 16;
        break;
      }
      case 'update': {
        const count = r.arrayLength();
        snap.update = grow(snap.update, count);
        for (let i = 0; i < count; i++) {
          const at = r.pos;
          if (r.arrayLength() !== width) throw new DecodeError(`an update entry is not of ${width} at byte ${at}`);
          const eid = eidOf(r.int());
          r.skipFloat(); // x
          r.skipFloat(); // y
          const seq = r.int();
          // Decoded, not skipped: msgspec's Any checks a str is UTF-8 and a map's keys.
          for (let f = 0; f < fields; f++) r.value();
          snap.update[i] = eid;
          if (eid >= 0) {
            if (eid >= snap.seqStamp.length) {
              snap.seqOf = grow(snap.seqOf, eid + 1);
              snap.seqStamp = grow(snap.seqStamp, eid + 1);
            }
            if (snap.seqStamp[eid] !== snap.stamp) { // the first entry of an eid counts
              snap.seqStamp[eid] = snap.stamp;
              snap.seqOf[eid] = seq;
            }
          }
        }
        snap.nUpdate = count;
        seen |= 32;
        break;
      }
      case 'leave': {
        const count = r.arrayLength();
        snap.leave = grow(snap.leave, count);
        for (let i = 0; i < count; i++) snap.leave[i] = eidOf(r.int());
        snap.nLeave = count;
        seen |= 64;
        break;
      }
      default: r.skip();
    }
  }
  if (seen !== 127) {
    const names = ['type', 'zone', 'tick', 'base', 'enter', 'update', 'leave'];
    throw new DecodeError(`missing required field \`${names.find((_, i) => !(seen & (1 << i)))}\``);
  }
  if (r.pos !== r.end) throw new DecodeError(`${r.end - r.pos} bytes after the snapshot`);
}

/**
 * bench/v2.py's Follower over `snap`: the eids this client's view holds, each delta
 * checked against the tick and the eids held. After a snapshot it could not apply it
 * waits, as a client does once it has sent `resync`, for the next complete one. The
 * view is a table indexed by eid, whose entries hold the generation of the view that
 * holds them: a complete snapshot starts a new generation instead of clearing it.
 */
class Follower {
  constructor() {
    this.held = new Uint32Array(256); // eid -> generation of the view that holds it
    this.entered = new Uint32Array(256); // eid -> stamp of the snapshot that entered it
    this.updated = new Uint32Array(256); // eid -> stamp of the snapshot that updated it
    this.generation = 1;
    this.stamp = 0;
    this.count = 0; // eids held: the players visible
    this.tick = null;
    this.waiting = false;
  }

  /** Apply the snapshot in `snap`; why it could not be applied, or null. */
  take() {
    const { enter, update, leave, nEnter, nUpdate, nLeave } = snap;
    if (snap.largestEid >= MAX_EID) return this.lost(`an eid out of the swarm's range (0 to ${MAX_EID - 1})`);
    this.fit(snap.largestEid + 1);
    const stamp = ++this.stamp;
    if (snap.base === null) {
      // Complete: the view becomes exactly `enter`, each of them also in `update`.
      for (let i = 0; i < nEnter; i++) this.entered[enter[i]] = stamp;
      for (let i = 0; i < nUpdate; i++) {
        if (this.entered[update[i]] !== stamp) return this.lost('a complete snapshot whose enter and update differ');
        this.updated[update[i]] = stamp;
      }
      for (let i = 0; i < nEnter; i++) {
        if (this.updated[enter[i]] !== stamp) return this.lost('a complete snapshot whose enter and update differ');
      }
      const generation = ++this.generation;
      this.count = 0;
      for (let i = 0; i < nEnter; i++) {
        if (this.held[enter[i]] !== generation) {
          this.held[enter[i]] = generation;
          this.count++;
        }
      }
      this.waiting = false;
    } else if (this.waiting) {
      return null; // deltas are passed over until the complete snapshot a resync asked for
    } else if (snap.base !== this.tick) {
      return this.lost(`a delta against tick ${snap.base}, the view is of ${this.tick}`);
    } else {
      // A delta: enter, then update (each one held), then leave. A failure leaves the
      // view half-applied, which is harmless: it waits for a complete one anyway.
      const generation = this.generation;
      for (let i = 0; i < nEnter; i++) {
        if (this.held[enter[i]] !== generation) {
          this.held[enter[i]] = generation;
          this.count++;
        }
      }
      for (let i = 0; i < nUpdate; i++) {
        if (this.held[update[i]] !== generation) return this.lost('an update of an eid the view does not hold');
      }
      for (let i = 0; i < nLeave; i++) {
        if (this.held[leave[i]] === generation) {
          this.held[leave[i]] = 0;
          this.count--;
        }
      }
    }
    this.tick = snap.tick;
    return null;
  }

  lost(why) {
    this.waiting = true;
    return why;
  }

  fit(n) {
    if (n <= this.held.length) return;
    const size = Math.max(n, 2 * this.held.length);
    for (const name of ['held', 'entered', 'updated']) {
      const bigger = new Uint32Array(size);
      bigger.set(this[name]);
      this[name] = bigger;
    }
  }
}

/**
 * bench/v2.py's OwnEntry: the seq of one eid's update entry, found without decoding the
 * snapshot. An update entry is an array of 4 and the game's fields (0x94 + their
 * number), the eid, two float32 (0xca and four bytes each) and the seq; the pattern is
 * checked where it is found, after the `update` key. -1 if the snapshot has none.
 */
function ownSeqBySearch(payload, needle) {
  let at = payload.indexOf(UPDATE_KEY);
  while (at >= 0) {
    at = payload.indexOf(needle, at);
    if (at < 0) return -1;
    const after = at + needle.length + 4; // past x's four bytes: y's 0xca
    if (payload[after] === 0xca) return readUint(payload, after + 5);
    at += 1;
  }
  return -1;
}

function readUint(buf, at) {
  if (at >= buf.length) return -1;
  const first = buf[at];
  if (first < 0x80) return first;
  const size = first === 0xcc ? 1 : first === 0xcd ? 2 : first === 0xce ? 4 : first === 0xcf ? 8 : 0;
  if (!size || at + 1 + size > buf.length) return -1;
  if (size === 8) return buf.readUInt32BE(at + 1) * 0x1_0000_0000 + buf.readUInt32BE(at + 5);
  return buf.readUIntBE(at + 1, size);
}

/** The length of the MessagePack array whose header is at `at` (world_swarm's _count). */
function arrayCount(buf, at) {
  const first = buf[at];
  if ((first & 0xf0) === 0x90) return first & 0x0f;
  if (first === 0xdc) return buf.readUInt16BE(at + 1);
  if (first === 0xdd) return buf.readUInt32BE(at + 1);
  return 0;
}

/** Players visible after this snapshot, read from its headers (world_swarm's V2.visible). */
function visibleBySearch(payload, before) {
  const base = payload.indexOf(BASE_KEY) + BASE_KEY.length;
  const entered = arrayCount(payload, payload.indexOf(ENTER_KEY, base) + ENTER_KEY.length);
  if (payload[base] === 0xc0) return entered;
  // `leave` is the last key: searched from the end, not across the updates.
  const left = arrayCount(payload, payload.lastIndexOf(LEAVE_KEY) + LEAVE_KEY.length);
  return before + entered - left;
}

/** The MessagePack of an unsigned integer, in its shortest form (bench/v2.py _uint). */
function packUint(n) {
  if (n < 0x80) return [n];
  if (n < 0x100) return [0xcc, n];
  if (n < 0x10000) return [0xcd, n >> 8, n & 0xff];
  return [0xce, (n >>> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff];
}

/**
 * One flat map of at most 15 keys (join, resync), as msgspec encodes a Python dict of
 * str, int, bool and None: in key order, strings and ints in their shortest forms. JS
 * numbers do not say int or float, so any other number is a float64 (moves, whose dx
 * and dy are floats whatever their value, have encodeMove).
 */
function encodeMap(message) {
  const parts = [];
  const keys = Object.keys(message);
  parts.push(Buffer.from([0x80 | keys.length])); // v2 client messages are small flat maps
  for (const key of keys) {
    parts.push(packStr(key));
    const value = message[key];
    if (typeof value === 'string') parts.push(packStr(value));
    else if (value === null) parts.push(Buffer.from([0xc0]));
    else if (typeof value === 'boolean') parts.push(Buffer.from([value ? 0xc3 : 0xc2]));
    else if (Number.isInteger(value) && value >= 0 && value < 2 ** 32) parts.push(Buffer.from(packUint(value)));
    else {
      const f = Buffer.allocUnsafe(9);
      f[0] = 0xcb;
      f.writeDoubleBE(value, 1);
      parts.push(f);
    }
  }
  return Buffer.concat(parts);
}

function packStr(text) {
  const bytes = Buffer.from(text, 'utf8');
  const n = bytes.length;
  const head = n < 32 ? [0xa0 | n] : n < 0x100 ? [0xd9, n] : [0xda, n >> 8, n & 0xff];
  return Buffer.concat([Buffer.from(head), bytes]);
}

// ---------------------------------------------------------------------------------------
// WebSocket frames.
// ---------------------------------------------------------------------------------------

// Client frames must be masked (RFC 6455 5.3) with unpredictable keys: they are drawn
// from a pool of random bytes refilled when used up, not one crypto call per frame.
const maskPool = Buffer.allocUnsafe(1 << 16);
let maskAt = maskPool.length;

function clientFrame(opcode, payload) {
  const n = payload.length;
  const header = n < 126 ? 2 : n < 0x10000 ? 4 : 10;
  const frame = Buffer.allocUnsafe(header + 4 + n);
  frame[0] = 0x80 | opcode;
  if (n < 126) frame[1] = 0x80 | n;
  else if (n < 0x10000) {
    frame[1] = 0x80 | 126;
    frame.writeUInt16BE(n, 2);
  } else {
    frame[1] = 0x80 | 127;
    frame.writeUInt32BE(Math.floor(n / 0x1_0000_0000), 2);
    frame.writeUInt32BE(n >>> 0, 6);
  }
  if (maskAt + 4 > maskPool.length) {
    crypto.randomFillSync(maskPool);
    maskAt = 0;
  }
  const m = header;
  maskPool.copy(frame, m, maskAt, maskAt + 4);
  maskAt += 4;
  for (let i = 0; i < n; i++) frame[m + 4 + i] = payload[i] ^ frame[m + (i & 3)];
  return frame;
}

// Every socket reads into this one buffer (net's `onread`): each read is handled to the
// end before the next, and what must outlive it (a frame cut across reads) is copied.
const READ_BUFFER = Buffer.allocUnsafe(256 << 10);

// ---------------------------------------------------------------------------------------
// A player.
// ---------------------------------------------------------------------------------------

class Player {
  constructor(swarm, user, checked) {
    this.swarm = swarm;
    this.user = user;
    this.checked = checked;
    this.socket = null;
    this.head = null; // the upgrade's answer while it is incomplete (Buffer), then null
    this.key = crypto.randomBytes(16).toString('base64');
    this.open = false; // upgraded and not closed
    this.joined = false; // welcomed: moves from now on
    this.closed = false;
    this.eid = -1;
    this.fields = 0; // the game's replicated fields, after [eid, x, y, seq]
    this.needle = null; // OwnEntry's bytes for this eid
    this.follower = checked ? new Follower() : null;
    this.visible = 0;
    this.visibleSamples = [];
    this.seq = 0;
    this.sentSeq = []; // moves awaiting their snapshot, in send order: seq ...
    this.sentAt = []; // ... and performance.now() when sent
    this.sentHead = 0; // the first of them not yet answered
    this.latencies = []; // ms, while measuring
    this.snapshots = 0; // while measuring
    this.bytes = 0; // payload bytes of those snapshots
    this.framesChecked = 0;
    this.failedCount = 0;
    this.failedFirst = []; // why, for the first few
    this.errors = new Map(); // v2 `error` messages by code
    // A frame cut across reads: its bytes so far, how many, and its size and header once known.
    this.part = null;
    this.partLen = 0;
    this.partNeed = 0;
    this.partHeader = 0;
    this.fragments = null; // a fragmented message's payloads so far (the server sends none)
  }

  connect(url) {
    const target = `/v1/world/ws?token=${encodeURIComponent(this.user.token)}`;
    this.head = Buffer.alloc(0);
    this.socket = net.connect({
      host: url.hostname,
      port: Number(url.port || 80),
      noDelay: true, // as browsers send WebSocket frames: a move leaves at once
      onread: { buffer: READ_BUFFER, callback: (nread, buf) => this.onRead(nread, buf) },
    });
    this.socket.on('connect', () => {
      // The upgrade world_swarm's raw client sends (bench/rawws.py upgrade_request).
      this.socket.write(`GET ${target} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\n`
        + `Connection: Upgrade\r\nSec-WebSocket-Key: ${this.key}\r\nSec-WebSocket-Version: 13\r\n`
        + `Sec-WebSocket-Protocol: ${SUBPROTOCOL}\r\n\r\n`);
    });
    this.socket.on('end', () => this.ended('1006')); // no close frame before the end of stream
    this.socket.on('error', (exc) => this.ended(exc.code || exc.message));
  }

  onRead(nread, buf) {
    if (this.closed) return true;
    const now = performance.now();
    if (this.head !== null) {
      this.handshake(buf, nread, now);
      return true;
    }
    this.received(buf, 0, nread, now);
    return true;
  }

  /** The upgrade's answer: 101, our subprotocol, and the key's accept (RFC 6455 4.1). */
  handshake(buf, nread, now) {
    this.head = Buffer.concat([this.head, buf.subarray(0, nread)]);
    const endOfHead = this.head.indexOf('\r\n\r\n');
    if (endOfHead < 0) {
      if (this.head.length > 16384) this.refuse('an upgrade answer without an end');
      return;
    }
    const head = this.head.toString('latin1', 0, endOfHead);
    const rest = this.head.subarray(endOfHead + 4);
    this.head = null;
    const status = head.split('\r\n')[0];
    if (!status.startsWith('HTTP/1.1 101')) return this.refuse(`upgrade refused: ${status}`);
    const headers = new Map(head.split('\r\n').slice(1).map((line) => {
      const colon = line.indexOf(':');
      return [line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()];
    }));
    if (headers.get('sec-websocket-protocol') !== SUBPROTOCOL) return this.refuse(`the server did not choose ${SUBPROTOCOL}`);
    const accept = crypto.createHash('sha1').update(this.key + WS_GUID).digest('base64');
    if (headers.get('sec-websocket-accept') !== accept) return this.refuse('a wrong Sec-WebSocket-Accept');
    this.open = true;
    this.send(encodeMap({ type: 'join', character_id: this.user.character_id }));
    if (rest.length) this.received(rest, 0, rest.length, now);
  }

  refuse(why) {
    this.ended(why);
    this.socket.destroy();
  }

  /**
   * Frames in buf[pos..end): handle the whole ones in place, keep (copied) the one cut
   * short by the end of the read. Server frames are unmasked; lengths are 7-bit, 16-bit
   * or 64-bit.
   */
  received(buf, pos, end, now) {
    if (this.partLen > 0) {
      pos = this.completePart(buf, pos, end, now);
      if (pos < 0) return;
    }
    while (pos < end && !this.closed) {
      const avail = end - pos;
      if (avail < 2) return this.keep(buf, pos, end, 0, 0);
      const second = buf[pos + 1];
      if (second & 0x80) return this.broken('a masked server frame');
      let length = second & 0x7f, header = 2;
      if (length === 126) {
        if (avail < 4) return this.keep(buf, pos, end, 0, 0);
        length = buf.readUInt16BE(pos + 2);
        header = 4;
      } else if (length === 127) {
        if (avail < 10) return this.keep(buf, pos, end, 0, 0);
        length = buf.readUInt32BE(pos + 2) * 0x1_0000_0000 + buf.readUInt32BE(pos + 6);
        header = 10;
      }
      if (length > MAX_FRAME) return this.broken(`a frame of ${length} bytes`);
      const total = header + length;
      if (total > avail) return this.keep(buf, pos, end, total, header);
      this.frame(buf[pos], buf.subarray(pos + header, pos + total), now);
      pos += total;
    }
  }

  /** Keep buf[pos..end), the start of a frame of `total` bytes (0: its header is cut too). */
  keep(buf, pos, end, total, header) {
    this.part = Buffer.allocUnsafe(Math.max(total, 14)); // 14: the longest header
    this.partLen = buf.copy(this.part, 0, pos, end);
    this.partNeed = total;
    this.partHeader = header;
  }

  /** Add this read's first bytes to the kept frame; where the read goes on after it, or
   *  -1 if the read was all part of it. */
  completePart(buf, pos, end, now) {
    while (this.partNeed === 0) { // the header is not whole yet: a byte or so at a time
      const part = this.part;
      let header = 2;
      if (this.partLen >= 2) {
        if (part[1] & 0x80) {
          this.broken('a masked server frame');
          return -1;
        }
        header = (part[1] & 0x7f) === 126 ? 4 : (part[1] & 0x7f) === 127 ? 10 : 2;
      }
      if (this.partLen >= header) {
        const code = part[1] & 0x7f;
        const length = code === 126 ? part.readUInt16BE(2)
          : code === 127 ? part.readUInt32BE(2) * 0x1_0000_0000 + part.readUInt32BE(6) : code;
        if (length > MAX_FRAME) {
          this.broken(`a frame of ${length} bytes`);
          return -1;
        }
        this.partNeed = header + length;
        this.partHeader = header;
        if (this.partNeed > part.length) {
          this.part = Buffer.allocUnsafe(this.partNeed);
          part.copy(this.part, 0, 0, this.partLen);
        }
        break;
      }
      const n = Math.min(header - this.partLen, end - pos);
      if (n === 0) return -1; // the read ended within the header
      buf.copy(part, this.partLen, pos, pos + n);
      this.partLen += n;
      pos += n; // and round again: the header may be whole now (and its frame empty)
    }
    const n = Math.min(this.partNeed - this.partLen, end - pos);
    buf.copy(this.part, this.partLen, pos, pos + n);
    this.partLen += n;
    pos += n;
    if (this.partLen < this.partNeed) return -1;
    const part = this.part;
    this.part = null;
    this.partLen = 0;
    this.frame(part[0], part.subarray(this.partHeader, this.partNeed), now);
    return pos;
  }

  /** One whole server frame; `payload` may be a view of the shared read buffer. */
  frame(first, payload, now) {
    const fin = first & 0x80, opcode = first & 0x0f;
    if (first & 0x70) return this.broken('a frame with an RSV bit set (no extension was agreed)');
    switch (opcode) {
      case BINARY:
        if (this.fragments) return this.broken('a new message before the last one\'s final fragment');
        if (fin) return this.message(payload, now);
        this.fragments = [Buffer.from(payload)];
        return;
      case CONTINUATION:
        if (!this.fragments) return this.broken('a continuation with nothing to continue');
        this.fragments.push(Buffer.from(payload));
        if (fin) {
          const whole = Buffer.concat(this.fragments);
          this.fragments = null;
          this.message(whole, now);
        }
        return;
      case TEXT:
        return this.fail('a text frame (v2 sends binary frames only)');
      case PING:
        return this.socket.write(clientFrame(PONG, payload));
      case PONG:
        return;
      case CLOSE: {
        const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
        this.ended(String(code));
        this.socket.end(clientFrame(CLOSE, payload.subarray(0, 2))); // answer it, then close
        return;
      }
      default:
        return this.broken(`a frame of opcode ${opcode}`);
    }
  }

  /** One v2 message. */
  message(payload, now) {
    if (payload.length >= SNAPSHOT_PREFIX.length && payload.compare(SNAPSHOT_PREFIX, 0, SNAPSHOT_PREFIX.length, 0, SNAPSHOT_PREFIX.length) === 0) {
      return this.snapshot(payload, now);
    }
    let body;
    try {
      body = decodeMessage(payload);
    } catch (exc) {
      if (!(exc instanceof DecodeError)) throw exc;
      return this.fail(`a message that does not decode: ${exc.message}`);
    }
    if (body.type === 'welcome') {
      if (!Number.isInteger(body.eid) || body.eid < 0) return this.broken('a v2 welcome without an eid');
      this.eid = body.eid;
      this.fields = Array.isArray(body.fields) ? body.fields.length : 0;
      this.needle = Buffer.from([0x94 + this.fields, ...packUint(this.eid), 0xca]);
      if (this.checked) this.follower = new Follower();
      this.joined = true;
    } else if (body.type === 'error') {
      const code = body.code ?? 'error';
      this.errors.set(code, (this.errors.get(code) ?? 0) + 1);
    }
    // events, pong: nothing to measure (the swarm does not fire)
  }

  /** A snapshot: counted, checked (a checked client), and its own entry's seq timed. */
  snapshot(payload, now) {
    const swarm = this.swarm, share = swarm.args.share;
    let ownSeq = -1;
    if (this.checked && this.eid >= 0) {
      this.framesChecked++;
      const unread = readSnapshot(payload, this.fields, share);
      const why = unread === null ? this.follower.take() : this.follower.lost(unread);
      // Its own entry as read; in bytes that do not decode, searched (world_swarm searches anyway).
      ownSeq = unread === null ? seqOf(this.eid) : ownSeqBySearch(payload, this.needle);
      if (why !== null) {
        this.fail(why);
        this.send(encodeMap({ type: 'resync' })); // as a client does
      }
      this.visible = this.follower.count;
    } else {
      this.visible = visibleBySearch(payload, this.visible);
      if (this.needle !== null && this.sentHead < this.sentSeq.length) {
        // Bytes read already (by a checked client) answer at once; others are searched.
        ownSeq = share && snap.why === null && holds(payload, this.fields) ? seqOf(this.eid)
          : ownSeqBySearch(payload, this.needle);
      }
    }
    if (swarm.measuring) {
      this.snapshots++;
      this.bytes += payload.length;
      if (this.snapshots % SAMPLE_EVERY === 0) this.visibleSamples.push(this.visible);
    }
    // Every move up to the seq this snapshot acknowledges is answered now.
    while (ownSeq >= 0 && this.sentHead < this.sentSeq.length && this.sentSeq[this.sentHead] <= ownSeq) {
      if (swarm.measuring) this.latencies.push(now - this.sentAt[this.sentHead]);
      this.sentHead++;
    }
    if (this.sentHead > 1024 && this.sentHead * 2 > this.sentSeq.length) {
      this.sentSeq = this.sentSeq.slice(this.sentHead);
      this.sentAt = this.sentAt.slice(this.sentHead);
      this.sentHead = 0;
    }
  }

  /** world_swarm's mover: a step along a circle, seq increasing. */
  move() {
    this.seq += 1;
    const angle = this.seq * 0.7;
    this.sentSeq.push(this.seq);
    this.sentAt.push(performance.now());
    this.send(encodeMove(this.seq, Math.round(Math.cos(angle) * 1000) / 1000, Math.round(Math.sin(angle) * 1000) / 1000));
  }

  send(payload) {
    if (this.open && !this.closed) this.socket.write(clientFrame(BINARY, payload));
  }

  fail(why) {
    this.failedCount++;
    if (this.failedFirst.length < 5) this.failedFirst.push(why);
  }

  /** A stream that cannot be followed: counted as a failed frame, and the socket closed. */
  broken(why) {
    this.fail(why);
    this.ended('broken stream');
    this.socket.destroy();
  }

  ended(reason) {
    if (this.closed) return;
    this.closed = true;
    this.open = false;
    if (!this.swarm.finishing) this.swarm.closed.set(reason, (this.swarm.closed.get(reason) ?? 0) + 1);
  }

  /** Close as a client does at the end of a run: a close frame (1000), then FIN. */
  close() {
    if (this.socket === null) return;
    if (this.open) this.socket.end(clientFrame(CLOSE, Buffer.from([0x03, 0xe8])));
    else this.socket.destroy();
    this.closed = true;
    this.open = false;
  }
}

// A move is the message the swarm sends most (10 a second each): its bytes are laid out
// once, and only dx, dy and seq written per move. {"type": "move", "dx": f64, "dy": f64,
// "seq": uint}, in world_swarm's key order.
const MOVE_HEAD = Buffer.from('\x84\xa4type\xa4move\xa2dx\xcb', 'latin1');

function encodeMove(seq, dx, dy) {
  const tail = packUint(seq);
  const out = Buffer.allocUnsafe(MOVE_HEAD.length + 8 + 4 + 8 + 4 + tail.length);
  let at = MOVE_HEAD.copy(out, 0);
  at = out.writeDoubleBE(dx, at);
  at += out.write('\xa2dy\xcb', at, 'latin1');
  at = out.writeDoubleBE(dy, at);
  at += out.write('\xa3seq', at, 'latin1');
  for (const byte of tail) out[at++] = byte;
  return out;
}

// ---------------------------------------------------------------------------------------
// The swarm.
// ---------------------------------------------------------------------------------------

class Swarm {
  constructor(args, users) {
    this.args = args;
    this.url = new URL(args.url);
    this.players = users.map((user, i) => new Player(this, user, i % args.checkEvery === 0));
    this.measuring = false;
    this.finishing = false; // our own closes at the end are not counted
    this.closed = new Map();
    this.moverTimer = null;
  }

  /** world_swarm's _every for moves: each player at --move-hz, the swarm spread over
   *  the period in 10 slots (a tenth of the players a slot), one timer for all; a loop
   *  a period behind skips the slots it missed rather than send bursts. */
  startMover() {
    const slots = 10, step = 1000 / this.args.moveHz / slots;
    const start = performance.now();
    let tick = 0;
    const next = () => {
      tick += 1;
      const behind = performance.now() - (start + tick * step);
      if (behind > slots * step) tick += Math.floor(behind / step);
      this.moverTimer = setTimeout(slot, Math.max(0, start + tick * step - performance.now()));
    };
    const slot = () => {
      const players = this.players;
      for (let i = tick % slots; i < players.length; i += slots) {
        const player = players[i];
        if (player.joined && player.open) player.move();
      }
      next();
    };
    next();
  }
}

async function main() {
  const args = options();
  if (new URL(args.url).protocol !== 'http:') die(`--url must be http://host:port (this swarm speaks no TLS), not ${args.url}`);
  const users = readUsers(args);
  const swarm = new Swarm(args, users);
  // SIGINT or SIGTERM while measuring ends the run with its report; before, it just ends it.
  const ended = new Promise((resolve) => {
    for (const signal of ['SIGINT', 'SIGTERM']) {
      process.on(signal, () => (swarm.measuring ? resolve(signal) : process.exit(130)));
    }
  });

  // Join N players over --ramp-s, 25 at a time, as world_swarm does.
  swarm.startMover();
  const pause = args.rampS * 1000 / Math.max(1, users.length / RAMP_BATCH);
  for (let i = 0; i < swarm.players.length; i++) {
    swarm.players[i].connect(swarm.url);
    if (i % RAMP_BATCH === RAMP_BATCH - 1) await sleep(pause);
    progress(`joining ${swarm.players.filter((p) => p.joined).length}/${users.length}`);
  }
  const deadline = performance.now() + JOIN_TIMEOUT_MS;
  while (performance.now() < deadline && swarm.players.some((p) => !p.joined && !p.closed)) {
    progress(`joined ${swarm.players.filter((p) => p.joined).length}/${users.length}`);
    await sleep(100);
  }
  await sleep(args.warmupS * 1000); // let the last ones settle before measuring
  if (args.readyFile) touch(args.readyFile);

  swarm.measuring = true;
  const started = performance.now(), cpuStarted = process.cpuUsage();
  const serverStarted = args.serverPid ? cpuSeconds(args.serverPid) : 0;
  const seqs = swarm.players.map((p) => p.seq);
  await Promise.race([reportWhile(swarm, args.duration), ended]);
  const elapsed = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuStarted);
  const serverCpu = args.serverPid ? cpuSeconds(args.serverPid) - serverStarted : null;
  const moves = swarm.players.map((p, i) => p.seq - seqs[i]);
  swarm.measuring = false;
  clearTimeout(swarm.moverTimer);

  let zones = [];
  try {
    zones = JSON.parse(await get(new URL('/v1/world/zones', swarm.url))).zones ?? [];
  } catch {
    // the server is gone: no tick_ms
  }
  swarm.finishing = true;
  for (const player of swarm.players) player.close();
  emit(`node_swarm: ${users.length} players (v2), moves at ${pyFloat(args.moveHz)} Hz, ${pyFloat(args.duration)} s`,
    summary(swarm, elapsed, (cpu.user + cpu.system) / 1e6, serverCpu, moves, zones), args.json);
  await sleep(300); // the close frames go out
  process.exit(0);
}

function options() {
  const { values } = parseArgs({
    options: {
      url: { type: 'string', default: 'http://127.0.0.1:18080' },
      n: { type: 'string', short: 'n', default: '100' },
      'users-file': { type: 'string', default: '.swarm-users.json' },
      'move-hz': { type: 'string', default: '10' },
      duration: { type: 'string', default: '20' },
      'ramp-s': { type: 'string', default: '5' },
      'warmup-s': { type: 'string', default: '2' },
      'check-every': { type: 'string', default: '1' },
      'no-share': { type: 'boolean', default: false },
      'server-pid': { type: 'string' },
      'ready-file': { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write('usage: node bench/node_swarm.mjs [--url URL] [-n N] [--users-file F] [--move-hz HZ]\n'
      + '       [--duration S] [--ramp-s S] [--warmup-s S] [--check-every K] [--server-pid PID]\n'
      + '       [--no-share] [--ready-file F] [--json]\n(see the comment at the top of this file)\n');
    process.exit(0);
  }
  const number = (name, { positive = false, whole = false } = {}) => {
    const value = Number(values[name]);
    if (!Number.isFinite(value) || value < 0 || (positive && value === 0) || (whole && !Number.isInteger(value))) {
      die(`${name === 'n' ? '-n' : `--${name}`} must be a ${whole ? 'whole ' : ''}${positive ? 'positive' : 'non-negative'} number, not ${values[name]}`);
    }
    return value;
  };
  return {
    url: values.url,
    n: number('n', { positive: true, whole: true }),
    usersFile: values['users-file'],
    moveHz: number('move-hz', { positive: true }),
    duration: number('duration', { positive: true }),
    rampS: number('ramp-s'),
    warmupS: number('warmup-s'),
    checkEvery: number('check-every', { positive: true, whole: true }),
    share: !values['no-share'],
    serverPid: values['server-pid'] ? number('server-pid', { positive: true, whole: true }) : null,
    readyFile: values['ready-file'] ?? null,
    json: values.json,
  };
}

/** The first N users of the Python swarm's --users-file, with tokens valid for the run. */
function readUsers(args) {
  const prepare = `run \`python -m bench.world_swarm --url ${args.url} -n ${args.n} --client raw `
    + `--protocol v2 --users-file ${args.usersFile} --duration 3\` first: it registers the users `
    + 'and refreshes their tokens';
  let users;
  try {
    users = JSON.parse(fs.readFileSync(args.usersFile, 'utf8'));
  } catch (exc) {
    die(`cannot read ${args.usersFile} (${exc.message}): ${prepare}`);
  }
  if (users.length < args.n) die(`${args.usersFile} has ${users.length} users, not ${args.n}: ${prepare}`);
  users = users.slice(0, args.n);
  const needed = Date.now() / 1000 + args.rampS + args.warmupS + args.duration + 120;
  const stale = users.filter((user) => tokenExpires(user.token) < needed).length;
  if (stale) die(`${stale} of the tokens in ${args.usersFile} expire before the run ends: ${prepare}`);
  return users;
}

function tokenExpires(token) {
  try {
    return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).exp;
  } catch {
    return 0;
  }
}

async function reportWhile(swarm, durationS) {
  const started = performance.now();
  for (;;) {
    const elapsed = (performance.now() - started) / 1000;
    if (elapsed >= durationS) return;
    await sleep(Math.min(1, durationS - elapsed) * 1000);
    const covered = (performance.now() - started) / 1000; // what the counts cover
    const rates = swarm.players.map((p) => p.snapshots / covered);
    // world_swarm takes each player's last 50; 10 keep the sort cheap at 2,000 players.
    const latencies = swarm.players.flatMap((p) => p.latencies.slice(-10)).map((ms) => ms / 1000);
    progress(`t=${covered.toFixed(0).padStart(4)}s snapshots/s p50 ${percentile(rates, 50).toFixed(1).padStart(5)} `
      + `min ${(rates.length ? minOf(rates) : 0).toFixed(1).padStart(5)}  latency p99 `
      + `${(1000 * percentile(latencies, 99)).toFixed(1).padStart(6)} ms`);
  }
}

/** world_swarm's summary, its keys where they apply. */
function summary(swarm, elapsed, ownCpu, serverCpu, moves, zones) {
  const players = swarm.players.filter((p) => p.joined);
  const rates = players.map((p) => p.snapshots / elapsed);
  const latencies = players.flatMap((p) => p.latencies.map((ms) => ms / 1000));
  const errors = new Map();
  for (const p of swarm.players) for (const [code, n] of p.errors) errors.set(code, (errors.get(code) ?? 0) + n);
  const failed = swarm.players.flatMap((p) => p.failedFirst);
  const perClient = (values) => ({
    min: round2(minOf(values)),
    p50: round2(percentile(values, 50)),
    max: round2(maxOf(values)),
  });
  const result = {
    players: swarm.players.length,
    joined: players.length,
    protocol: 'v2',
    check_every: swarm.args.checkEvery,
    measured_s: new PyFloat(Math.round(elapsed * 10) / 10),
    snapshots_per_s_per_client: perClient(rates),
    clients_under_19_5_per_s: rates.filter((r) => r < 19.5).length,
    input_latency: { ...distribution(latencies), samples: latencies.length },
    kbytes_per_s_per_client: perClient(players.map((p) => p.bytes / elapsed / 1000)),
    visible_per_snapshot: quantiles(players.flatMap((p) => p.visibleSamples)),
    errors: errors.size ? Object.fromEntries(errors) : 0,
    closed: swarm.closed.size ? Object.fromEntries(swarm.closed) : 0,
    frames_checked: swarm.players.reduce((n, p) => n + p.framesChecked, 0),
    frames_decoded: snap.reads, // typed reads done: the others were of bytes read already
    frames_failed: { count: swarm.players.reduce((n, p) => n + p.failedCount, 0), first: failed.slice(0, 5) },
    moves_per_s_per_client: perClient(moves.map((n) => n / elapsed)),
    swarm_cpu_percent_of_a_core: round1(100 * ownCpu / elapsed),
  };
  if (serverCpu !== null) result.server_cpu_percent_of_a_core = round1(100 * serverCpu / elapsed);
  for (const zone of zones) result[`zone_${zone.zone}_tick_ms`] = zone.tick_ms ?? null;
  return result;
}

// ---------------------------------------------------------------------------------------
// bench/report.py, in JS: nearest-rank percentiles, the progress line, the report.
// ---------------------------------------------------------------------------------------

/** A float as Python prints it (20.0, not 20; nan): the report reads like world_swarm's. */
class PyFloat {
  constructor(value) {
    this.value = value;
  }

  toString() {
    if (Number.isNaN(this.value)) return 'nan';
    if (!Number.isFinite(this.value)) return this.value > 0 ? 'inf' : '-inf';
    return Number.isInteger(this.value) ? this.value.toFixed(1) : String(this.value);
  }

  toJSON() {
    return Number.isFinite(this.value) ? this.value : null; // as orjson writes NaN
  }
}

function pyFloat(value) {
  return new PyFloat(value).toString();
}

function round2(value) {
  return new PyFloat(Math.round(value * 100) / 100);
}

function round1(value) {
  return new PyFloat(Math.round(value * 10) / 10);
}

function percentile(values, q) {
  if (!values.length) return NaN;
  const ordered = Float64Array.from(values).sort();
  const rank = Math.max(1, Math.ceil(q / 100 * ordered.length));
  return ordered[rank - 1];
}

// Loops, not Math.max(...values): a run's samples outnumber what a call's arguments may be.
function minOf(values) {
  let least = NaN;
  for (const x of values) if (!(x >= least)) least = x;
  return least;
}

function maxOf(values) {
  let most = NaN;
  for (const x of values) if (!(x <= most)) most = x;
  return most;
}

/** p50/p95/p99/max of whole numbers (players visible): whole numbers, as in Python. */
function quantiles(values) {
  const keep = (x) => (Number.isNaN(x) ? new PyFloat(x) : x);
  return {
    p50: keep(percentile(values, 50)), p95: keep(percentile(values, 95)),
    p99: keep(percentile(values, 99)), max: keep(maxOf(values)),
  };
}

function distribution(valuesS) {
  const ms = (x) => round2(1000 * x);
  return {
    p50_ms: ms(percentile(valuesS, 50)), p95_ms: ms(percentile(valuesS, 95)),
    p99_ms: ms(percentile(valuesS, 99)), max_ms: ms(maxOf(valuesS)),
  };
}

function progress(line) {
  process.stderr.write(`\r${line.padEnd(78)}`);
}

function emit(title, results, asJson) {
  process.stderr.write('\n');
  if (asJson) {
    process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
    return;
  }
  const rows = flatten(results);
  const width = Math.max(...rows.map(([name]) => name.length));
  process.stdout.write(`${title}\n${rows.map(([name, value]) => `  ${name.padEnd(width)}  ${show(value)}`).join('\n')}\n`);
}

function flatten(results, prefix = '') {
  const rows = [];
  for (const [name, value] of Object.entries(results)) {
    if (value !== null && typeof value === 'object' && !Array.isArray(value) && !(value instanceof PyFloat)) {
      rows.push(...flatten(value, `${prefix}${name}.`));
    } else rows.push([`${prefix}${name}`, value]);
  }
  return rows;
}

/** A value as Python's str() shows it in world_swarm's report. */
function show(value) {
  if (Array.isArray(value)) return `[${value.map((v) => (typeof v === 'string' ? `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'` : show(v))).join(', ')}]`;
  if (value === null) return 'None';
  if (value === true || value === false) return value ? 'True' : 'False';
  return String(value);
}

// ---------------------------------------------------------------------------------------
// Small helpers.
// ---------------------------------------------------------------------------------------

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function touch(path) {
  const now = new Date();
  fs.closeSync(fs.openSync(path, 'a'));
  fs.utimesSync(path, now, now);
}

/** CPU seconds of a process: utime + stime of /proc/PID/stat (after its "(comm)"). */
function cpuSeconds(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

function get(url) {
  return new Promise((resolve, reject) => {
    const request = http.get(url, { timeout: 10_000 }, (response) => {
      const chunks = [];
      response.on('data', (chunk) => chunks.push(chunk));
      response.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      response.on('error', reject);
    });
    request.on('timeout', () => request.destroy(new Error('timed out')));
    request.on('error', reject);
  });
}

function die(why) {
  process.stderr.write(`node_swarm: ${why}\n`);
  process.exit(2);
}

// Run as a script; imported (by a test), it only lends its pieces.
if (process.argv[1] && import.meta.url === pathToFileURL(fs.realpathSync(process.argv[1])).href) await main();

// For tests/test_node_swarm.py: its parsers against the Python ones.
export { DecodeError, Follower, Player, decodeMessage, ownSeqBySearch, readSnapshot, seqOf, snap };
