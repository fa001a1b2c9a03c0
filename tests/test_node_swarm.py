"""bench/node_swarm.mjs, the v2 world swarm in Node.js (for swarms one Python core cannot
read), against a real server: its players join, move and read, every frame of its
checked clients decodes, and it reports world_swarm's keys. And its parsers against the
Python ones they stand in for (Hypothesis draws, differential): decodeMessage against
msgspec, the typed read and Follower against bench/v2.py's Follower on real snapshots
(zones/interest.py's encoder), ownSeqBySearch against a full decode, and a Player's
frame parser over streams cut anywhere.

Rules: a process of the suite's own (an api with its zone, a zone id of the test's
own); the users prepared by the Python swarm, as the Node one expects; Node from the
system (`make test` installs Debian's nodejs; without it the tests say why they skip).
Nothing is timed: a count must be above zero, never a rate above a bar; a parser that
does not answer within ANSWER_S fails its test. The parsers are pure logic: one Node
process a test imports node_swarm.mjs and answers each example's batch, a JSON line for
a JSON line; no mocks, no fixtures of bytes: every snapshot is the server's encoder's.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import select
import shutil
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bench.v2 import Follower, OwnEntry, decode, snapshots
from server.config import Settings
from server.process import Roles
from tests.helpers import running_process
from zones.grid import Grid
from zones.interest import V2, Interest
from zones.simulation import Eids
from zones.snapshots import update_head

NODE = shutil.which("node") or shutil.which("nodejs")
NODE_SWARM = Path(__file__).resolve().parent.parent / "bench" / "node_swarm.mjs"
PLAYERS = 6


async def _run(*command: str) -> dict[str, Any]:
    done = await trio.run_process(list(command), capture_stdout=True, capture_stderr=True,
                                  check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    report: dict[str, Any] = orjson.loads(done.stdout)
    return report


@pytest.mark.skipif(NODE is None, reason="no node: make test installs Debian's nodejs")
async def test_the_node_swarm_plays_and_reports_what_the_python_swarm_does(
    settings: Settings, nursery: trio.Nursery, tmp_path: Path
) -> None:
    assert NODE is not None
    zone = f"swarm-{uuid.uuid4().hex[:8]}"
    own = dataclasses.replace(settings, world_zone_id=zone)
    users = tmp_path / "users.json"
    async with running_process(own, nursery, Roles(zones=(zone,))) as running:
        python = await _run(sys.executable, "-m", "bench.world_swarm", "--url", running.url,
                            "-n", str(PLAYERS), "--client", "raw", "--protocol", "v2",
                            "--users-file", str(users), "--duration", "1", "--ramp-s", "0.5",
                            "--warmup-s", "0", "--json")
        node = await _run(NODE, "bench/node_swarm.mjs", "--url", running.url,
                          "-n", str(PLAYERS), "--users-file", str(users), "--duration", "2",
                          "--ramp-s", "0.5", "--warmup-s", "0", "--check-every", "2",
                          "--json")
    for report in (python, node):
        assert report["joined"] == PLAYERS, report
        assert (report["errors"], report["closed"]) == (0, 0), report
        assert report["frames_failed"]["count"] == 0, report["frames_failed"]
    assert node["frames_checked"] > 0
    assert node["snapshots_per_s_per_client"]["min"] > 0
    assert node["moves_per_s_per_client"]["min"] > 0
    assert node["input_latency"]["samples"] > 0
    assert node["visible_per_snapshot"]["p50"] == PLAYERS  # everyone sees everyone here
    assert set(python) - set(node) <= {"deflate", "read_every", "spread", "view_radius",
                                       "server_cpu_percent_of_a_core"}, \
        "the Node swarm reports world_swarm's keys"


# ---------------------------------------------------------------------------------------
# Its parsers against the Python ones, with Hypothesis: one Node process a test, answering
# a JSON line for each JSON line it is given (a batch: an example's payloads, or one
# stream of snapshots), so that a failing example shrinks as any other.
# ---------------------------------------------------------------------------------------

ANSWER_S = 60  # a parser that loops is a test that fails, not one that hangs
MAX_EID = 1 << 22  # node_swarm.mjs MAX_EID: its views are tables indexed by eid
MAX_DEPTH = 64  # node_swarm.mjs MAX_DEPTH: containers nested deeper are a DecodeError

# What the Node side answers, as JSON both ways: a value as `canon` below writes it
# (every number as the hex of its float64, which is what a JS Number is: no tolerance,
# and NaN apart), a DecodeError's message, or anything else thrown (a crash).
HELPER = r"""
import readline from 'node:readline';

const { DecodeError, Follower, Player, decodeMessage, ownSeqBySearch, readSnapshot, seqOf,
  snap } = await import(MODULE);

function canon(value) {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return value;
  if (typeof value === 'number') {
    if (Number.isNaN(value)) return ['nan'];
    const bits = Buffer.alloc(8);
    bits.writeDoubleBE(value);
    return ['f64', bits.toString('hex')];
  }
  if (Buffer.isBuffer(value)) return ['bin', value.toString('hex')];
  if (Array.isArray(value)) return ['array', value.map(canon)];
  const map = Object.create(null);
  for (const [key, item] of Object.entries(value)) map[key] = canon(item);
  return ['map', map];
}

function decoded(payload) {
  try {
    return { ok: canon(decodeMessage(payload)) };
  } catch (exc) {
    if (exc instanceof DecodeError) return { refused: exc.message };
    return { crash: String((exc && exc.stack) || exc) };
  }
}

function held(follower) {
  const eids = [];
  for (let eid = 0; eid < follower.held.length; eid++) {
    if (follower.held[eid] === follower.generation) eids.push(eid);
  }
  return eids;
}

const ops = {
  decode: ({ payloads }) => payloads.map((hex) => decoded(Buffer.from(hex, 'hex'))),
  // Every proper prefix of each payload, each in a buffer of its own: those that are not
  // a DecodeError, with what they were.
  cuts: ({ payloads }) => payloads.map((hex) => {
    const whole = Buffer.from(hex, 'hex');
    const wrong = [];
    for (let n = 0; n < whole.length; n++) {
      const answer = decoded(Buffer.from(whole.subarray(0, n)));
      if (!('refused' in answer)) wrong.push([n, answer]);
    }
    return wrong;
  }),
  // One client's stream, as a checked Player takes it, three times over: a read of its
  // own (--no-share), a read kept for others, and the kept read used again (the same
  // bytes, another copy of them).
  follow: ({ fields, frames }) => {
    const followers = [new Follower(), new Follower(), new Follower()];
    return frames.map((hex) => {
      const bytes = Buffer.from(hex, 'hex');
      const reads = snap.reads;
      const takes = followers.map((follower, i) => {
        const unread = readSnapshot(Buffer.from(bytes), fields, i > 0);
        const why = unread === null ? follower.take() : follower.lost(unread);
        const seqs = {};
        if (unread === null) {
          for (let k = 0; k < snap.nUpdate; k++) {
            const eid = snap.update[k];
            if (eid >= 0) seqs[eid] = seqOf(eid);
          }
        }
        return { why, waiting: follower.waiting, tick: follower.tick, count: follower.count,
                 eids: follower.waiting ? null : held(follower), seqs };
      });
      return { takes, reads: snap.reads - reads, decoded: decoded(bytes) };
    });
  },
  // A Player's frame parser over a stream cut into reads, each in the one shared buffer
  // (overwritten after every read, as the next socket's read would): the messages it
  // hands on, the first byte of what it writes back, and what it counted as failed.
  frames: ({ chunks }) => {
    const swarm = { finishing: false, closed: new Map() };
    const player = new Player(swarm, { token: '', character_id: '' }, false);
    const seen = [];
    player.head = null; // upgraded
    player.open = true;
    player.socket = { write: (b) => seen.push(['write', b[0]]),
                      end: (b) => seen.push(['write', b[0]]), destroy: () => {} };
    player.message = (payload) => seen.push(['message', Buffer.from(payload).toString('hex')]);
    const shared = Buffer.alloc(1 << 20);
    for (const hex of chunks) {
      player.onRead(shared.write(hex, 'hex'), shared);
      shared.fill(0xee);
    }
    return { seen, failed: player.failedFirst, closed: [...swarm.closed.keys()] };
  },
  own: ({ cases }) => cases.map(({ payload, needles }) => {
    const bytes = Buffer.from(payload, 'hex');
    return needles.map((needle) => ownSeqBySearch(bytes, Buffer.from(needle, 'hex')));
  }),
};

for await (const line of readline.createInterface({ input: process.stdin, crlfDelay: Infinity })) {
  const request = JSON.parse(line);
  let answer;
  try {
    answer = { answer: ops[request.op](request) };
  } catch (exc) {
    answer = { crash: String((exc && exc.stack) || exc) };
  }
  process.stdout.write(`${JSON.stringify(answer)}\n`);
}
"""


class Node:
    """The helper above in one Node process: ask() sends a request, returns its answer."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process
        self._pending = b""

    def ask(self, op: str, **request: Any) -> Any:
        process = self._process
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(orjson.dumps({"op": op, **request}) + b"\n")
        process.stdin.flush()
        deadline = time.monotonic() + ANSWER_S
        out = process.stdout.fileno()
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            assert left > 0 and select.select([out], [], [], left)[0], \
                f"node did not answer {op} within {ANSWER_S} s"
            chunk = os.read(out, 1 << 20)
            assert chunk, f"node exited: {self._stderr()}"
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        # json, not orjson: a Number past 2^64 (a tick read as a float64) is written whole.
        reply = json.loads(line)
        assert "crash" not in reply, reply["crash"]
        return reply["answer"]

    def _stderr(self) -> str:
        self._process.kill()
        assert self._process.stderr is not None
        return self._process.stderr.read().decode(errors="replace")[-2000:]


@pytest.fixture
def node() -> Iterator[Node]:
    assert NODE is not None
    module = json.dumps(NODE_SWARM.as_uri())
    with subprocess.Popen([NODE, "--input-type=module", "-e",
                           HELPER.replace("MODULE", module, 1)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as process:
        try:
            yield Node(process)
        finally:
            assert process.stdin is not None
            process.stdin.close()  # the helper's loop ends: so does the process
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- MessagePack values, canonical on both sides ------------------------------------------

REFUSED = "a DecodeError"
EITHER = "a DecodeError or a map"  # msgspec reads it, node_swarm otherwise (plain below)


def canon(value: object) -> object:
    """A decoded value as the helper's `canon` writes what decodeMessage returns: an int
    becomes the float64 nearest to it, as node_swarm reads one (exact up to 2^53)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return ["f64", struct.pack(">d", float(value)).hex()]
    if isinstance(value, float):
        return ["nan"] if math.isnan(value) else ["f64", struct.pack(">d", value).hex()]
    if isinstance(value, bytes):
        return ["bin", value.hex()]
    if isinstance(value, list):
        return ["array", [canon(item) for item in value]]
    assert isinstance(value, dict), value
    return ["map", {key: canon(item) for key, item in value.items()}]


def plain(value: object, depth: int = 0) -> bool:
    """Whether node_swarm reads `value` (decoded by msgspec) as msgspec does: maps with
    str keys, no ext types (msgspec's Ext, or its timestamps), at most MAX_DEPTH
    containers deep. node_swarm refuses ext types and containers as keys, and writes
    other keys as JS does (String(key))."""
    if isinstance(value, list):
        return depth < MAX_DEPTH and all(plain(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return depth < MAX_DEPTH and all(
            isinstance(key, str) and plain(item, depth + 1) for key, item in value.items())
    return value is None or isinstance(value, bool | int | float | str | bytes)


def expected(payload: bytes) -> object:
    """What decodeMessage must answer for `payload`: msgspec's value, REFUSED or EITHER."""
    try:
        value = msgspec.msgpack.decode(payload)
    except (msgspec.DecodeError, RecursionError):  # nested past MAX_DEPTH, far past
        return REFUSED
    if not isinstance(value, dict):
        return REFUSED  # a v2 message is a map
    return canon(value) if plain(value) else EITHER


def check_decoded(payload: bytes, answer: dict[str, Any]) -> None:
    want = expected(payload)
    assert "crash" not in answer, (payload.hex(), answer)
    if want == REFUSED:
        assert "refused" in answer, (payload.hex(), answer)
    elif want != EITHER:
        assert answer.get("ok") == want, (payload.hex(), answer, want)


ENCODE = msgspec.msgpack.Encoder().encode
LENGTHS = {0xC4: ">B", 0xC5: ">H", 0xC6: ">I", 0xD9: ">B", 0xDA: ">H", 0xDB: ">I",
           0xDC: ">H", 0xDD: ">I", 0xDE: ">H", 0xDF: ">I"}
INTS = {0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
        0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q"}


def headed(code: int, n: int, body: bytes) -> msgspec.Raw:
    """`body` after a header of `code` that says `n`, whatever the shortest form is."""
    return msgspec.Raw(bytes((code,)) + struct.pack(LENGTHS[code], n) + body)


def int_in(code: int) -> st.SearchStrategy[msgspec.Raw]:
    size = struct.calcsize(INTS[code])
    signed = code >= 0xD0
    low, high = (-(1 << (8 * size - 1)), (1 << (8 * size - 1)) - 1) if signed \
        else (0, (1 << (8 * size)) - 1)
    return st.integers(low, high).map(
        lambda n: msgspec.Raw(bytes((code,)) + struct.pack(INTS[code], n)))


keys = st.text(max_size=12) | st.sampled_from(["type", "__proto__", "0", "10", "constructor"])
leaves = st.one_of(
    st.none(), st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),  # msgspec writes float64
    st.floats(width=32).map(lambda x: msgspec.Raw(b"\xca" + struct.pack(">f", x))),  # as _XY32
    st.sampled_from(sorted(INTS)).flatmap(int_in),  # ints in a wider form than the shortest
    st.text(), st.text(min_size=20, max_size=300),
    st.binary(max_size=40),
    st.tuples(st.sampled_from([0xD9, 0xDA, 0xDB]), st.text(max_size=20)).map(
        lambda c: headed(c[0], len(c[1].encode()), c[1].encode())),
    st.tuples(st.sampled_from([0xC4, 0xC5, 0xC6]), st.binary(max_size=20)).map(
        lambda c: headed(c[0], len(c[1]), c[1])),
)


def containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    pairs = st.lists(st.tuples(keys, inner), max_size=5)
    return st.one_of(
        st.lists(inner, max_size=6), st.lists(inner, min_size=16, max_size=18),
        st.dictionaries(keys, inner, max_size=6),
        st.tuples(st.sampled_from([0xDC, 0xDD]), st.lists(inner, max_size=5)).map(
            lambda c: headed(c[0], len(c[1]), b"".join(ENCODE(x) for x in c[1]))),
        st.tuples(st.sampled_from([0xDE, 0xDF]), pairs).map(  # keys may repeat: last wins
            lambda c: headed(c[0], len(c[1]), b"".join(ENCODE(k) + ENCODE(v) for k, v in c[1]))),
    )


values = st.recursive(leaves, containers, max_leaves=16)
messages = st.one_of(
    st.dictionaries(keys, values, max_size=8),
    st.tuples(st.sampled_from([0xDE, 0xDF]), st.lists(st.tuples(keys, values), max_size=6)).map(
        lambda c: headed(c[0], len(c[1]), b"".join(ENCODE(k) + ENCODE(v) for k, v in c[1]))),
).map(ENCODE)


def examples(n: int) -> settings:
    """Hypothesis's settings here: the node fixture is the test's, shared by its examples
    (one process a test, on purpose); no deadline (a round trip to it may queue)."""
    return settings(max_examples=n, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


needs_node = pytest.mark.skipif(NODE is None, reason="no node: make test installs Debian's nodejs")


@needs_node
@examples(100)
@given(st.lists(messages | values.map(ENCODE), min_size=1, max_size=8))
def test_decode_message_reads_what_msgspec_reads(node: Node, payloads: list[bytes]) -> None:
    """Every value of the kinds the server sends, float32 and wide forms included, reads
    as msgspec reads it; what is not a map is refused (a v2 message is one)."""
    answers = node.ask("decode", payloads=[p.hex() for p in payloads])
    for payload, answer in zip(payloads, answers, strict=True):
        check_decoded(payload, answer)


@needs_node
@examples(40)
@given(st.lists(messages.filter(lambda m: len(m) < 600), min_size=1, max_size=4))
def test_every_cut_of_a_message_is_a_decode_error(node: Node, payloads: list[bytes]) -> None:
    """A message cut anywhere (every proper prefix, each in a buffer of its own) is a
    DecodeError: no MessagePack value has a prefix that is a whole one."""
    cut = node.ask("cuts", payloads=[p.hex() for p in payloads])
    assert cut == [[] for _ in payloads], "prefixes that were not a DecodeError"


def garble(payload: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(payload)
    for at, xor in flips:
        out[at % len(out)] ^= xor
    return bytes(out)


big = st.integers(0, 2**32 - 1)
garbled = st.one_of(
    st.binary(max_size=120),
    st.binary(max_size=40).map(lambda b: b"\x81\xa1k" + b),
    st.builds(lambda k, v: b"\x81" + ENCODE(k) + ENCODE(v), values, values),  # any key
    st.builds(garble, messages, st.lists(st.tuples(st.integers(0, 2**16), st.integers(1, 255)),
                                         min_size=1, max_size=3)),
    # A header that claims more than there is (checked against the bytes left).
    st.builds(lambda code, n, tail: b"\x81\xa1k" + bytes((code,))
              + struct.pack(LENGTHS[code], n % (1 << 8 * struct.calcsize(LENGTHS[code]))) + tail,
              st.sampled_from(sorted(LENGTHS)), big, st.binary(max_size=20)),
    # Containers nested deeper than MAX_DEPTH (and far deeper), cut or whole.
    st.builds(lambda depth, head, end: b"\x81\xa1k" + head * depth + end,
              st.integers(MAX_DEPTH - 3, 20_000), st.sampled_from([b"\x91", b"\x81\xa1k"]),
              st.sampled_from([b"\xc0", b""])),
)


@needs_node
@examples(120)
@example(payloads=[b"\x81\x80\xc0", b"\x81\x91\x80\xc0", b"\x81\x92\x01\x02\xc0"])  # keys
@given(st.lists(garbled, min_size=1, max_size=8))
def test_garbled_bytes_are_a_decode_error_or_what_msgspec_reads(
    node: Node, payloads: list[bytes]
) -> None:
    """Random bytes, valid messages with bytes flipped, headers that claim more than
    there is, nests deeper than MAX_DEPTH: a DecodeError (nothing else thrown, no hang,
    no stack overflow) wherever msgspec refuses, and msgspec's value wherever both read."""
    answers = node.ask("decode", payloads=[p.hex() for p in payloads])
    for payload, answer in zip(payloads, answers, strict=True):
        check_decoded(payload, answer)


# --- v2 snapshots, as the server's own encoder writes them ---------------------------------

BOUNDS = (-1000.0, -1000.0, 1000.0, 1000.0)
coordinates = st.floats(-1000.0, 1000.0)  # the zone's bounds; float32 rounds them on the wire
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(),
                    st.text(max_size=40))  # a game's replicated fields (rules/api.py)
seq_steps = st.integers(0, 3) | st.sampled_from([200, 70_000, 2**32])


@dataclass(frozen=True)
class Tick:
    """What happens in one tick, and what becomes of the snapshot the member is sent."""

    joins: list[tuple[float, float, str, tuple[Any, ...]]]  # x, y, name, fields
    moves: list[tuple[int, float, float, int, tuple[Any, ...]]]  # who, x, y, seq step, fields
    leaves: list[int]  # who: an index into the players present, modulo their number
    look: tuple[float, float] | None  # the member's own cell moves: a complete snapshot
    fate: tuple[str, int, int]  # "sent", "lost" (sent, never read), "flipped" (at, xor), "cut"


@dataclass(frozen=True)
class Script:
    fields: int
    radius: float
    look: tuple[float, float]
    ticks: list[Tick]


@st.composite
def scripts(draw: st.DrawFn) -> Script:
    fields = draw(st.integers(0, 2))
    values = st.tuples(*[scalars] * fields)
    tick = st.builds(
        Tick,
        joins=st.lists(st.tuples(coordinates, coordinates, st.text(max_size=40), values),
                       max_size=3),
        moves=st.lists(st.tuples(st.integers(0, 99), coordinates, coordinates, seq_steps,
                                 values), max_size=6),
        leaves=st.lists(st.integers(0, 99), max_size=2),
        look=st.none() | st.tuples(coordinates, coordinates),
        fate=st.tuples(st.sampled_from(["sent"] * 4 + ["lost", "flipped", "cut"]),
                       st.integers(0, 2**16), st.integers(1, 255)),
    )
    return Script(fields, draw(st.sampled_from([0.0, 100.0])),
                  draw(st.tuples(coordinates, coordinates)),
                  draw(st.lists(tick, min_size=1, max_size=30)))


def exotic(value: object) -> bool:
    """A field's value node_swarm refuses though msgspec's Any reads it: an ext type, or a
    map with an array (a tuple) as a key."""
    if isinstance(value, list):
        return any(exotic(item) for item in value)
    if isinstance(value, dict):
        return any(not isinstance(k, str | int | float | bool | bytes | None) or exotic(v)
                   for k, v in value.items())
    return isinstance(value, msgspec.msgpack.Ext | datetime.datetime)


def take(follower: Follower, typed: Any, payload: bytes) -> str | None:
    """bench/v2.py's Follower.take, with what node_swarm.mjs documents it refuses besides:
    a field's value of another kind than v2 sends, an eid past its tables."""
    if typed is not None:
        if any(exotic(value) for entry in typed.update for value in entry[4:]):
            return follower._lost("does not decode: a field's value is an ext type")
        eids = [e[0] for e in typed.enter] + [e[0] for e in typed.update] + list(typed.leave)
        if not all(0 <= eid < MAX_EID for eid in eids):
            return follower._lost(f"an eid out of the swarm's range (0 to {MAX_EID - 1})")
    return follower.take(payload)


def play(script: Script) -> tuple[list[bytes], list[dict[str, Any]]]:
    """The frames one member reads, made by an Interest as a zone's are, and what
    bench/v2.py's Follower makes of each. A refused frame is answered by a `resync`: the
    next one is complete."""
    names = tuple(f"f{i}" for i in range(script.fields))
    zone = Interest("z1", Grid(*BOUNDS, script.radius), epoch="e1", fields=names)
    eids, present, seqs = Eids(), list[int](), dict[int, int]()
    follower, typed_of = Follower(script.fields), snapshots(script.fields)
    look, since = script.look, None
    frames: list[bytes] = []
    wanted: list[dict[str, Any]] = []
    for number, tick in enumerate(script.ticks, start=1):
        for x, y, name, fields in tick.joins:
            eid = eids.take()
            zone.enter(eid, f"char-{eid}-{number}", name, x, y, 0, fields)
            present.append(eid)
            seqs[eid] = 0
        for who, x, y, step, fields in tick.moves:
            if present:
                eid = present[who % len(present)]
                seqs[eid] += step
                zone.update(eid, x, y, seqs[eid], fields)
        for who in tick.leaves:
            if present:
                eid = present.pop(who % len(present))
                zone.leave(eid)
                eids.give_back(eid)
        zone.seal(number)
        eids.wake()
        look = tick.look or look
        payload, since = zone.view(zone.grid.cell(*look)).encoded(V2, since)
        fate, at, xor = tick.fate
        if fate == "lost":
            continue
        frame = garble(payload, [(at, xor)]) if fate == "flipped" \
            else payload[:at % len(payload)] if fate == "cut" else payload
        try:
            typed = typed_of.decode(frame)
        except msgspec.DecodeError:
            typed = None
        why = take(follower, typed, frame)
        if why is not None:
            since = None  # the member's resync
        first: dict[str, int] = {}
        for entry in typed.update if typed is not None else ():
            if 0 <= entry[0] < MAX_EID:
                first.setdefault(str(entry[0]), entry[3])
        frames.append(frame)
        wanted.append({"why": why, "waiting": follower.waiting, "tick": follower.tick,
                       "eids": None if follower.waiting else sorted(follower.eids),
                       "seqs": first if typed is not None else {}})
    return frames, wanted


def same_why(ours: str | None, theirs: str | None) -> bool:
    if ours is None or theirs is None:
        return ours is theirs
    if ours.startswith("does not decode"):  # each library says why in its own words
        return theirs.startswith("does not decode")
    return theirs.replace("null", "None") == ours  # a view of no tick yet


def numbers(values: dict[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in values.items()}


# A str field's last byte (the payload's 8th from the end, before `leave`: a5 ... 90)
# made a lead byte: msgspec's Any refuses the str, as node_swarm must.
BAD_FIELD = Script(1, 0.0, (0.0, 0.0), [Tick([(0.0, 0.0, "a", ("\u00e9",))], [], [], None,
                                             ("flipped", -8, 0x40))])


@needs_node
@examples(200)
@example(script=BAD_FIELD)
@given(scripts())
def test_the_follower_takes_and_refuses_what_bench_v2s_takes_and_refuses(
    node: Node, script: Script
) -> None:
    """Real snapshots (zones/interest.py's encoder: players join, move, leave, the
    member's cell moves; a frame lost now and then, a byte flipped, a frame cut short)
    through node_swarm's typed read and Follower, and through bench/v2.py's: the same
    frames applied and the same refused, for the same reason; the same view after each
    (its eids, its tick, waiting or not); each update's seq as read; and decodeMessage
    reads every frame as msgspec does (float32 positions to the bit). Each frame is read
    three times, as the swarm's clients read it: a read of its own, a read kept for
    others, and the kept one used again."""
    frames, wanted = play(script)
    answers = node.ask("follow", fields=script.fields, frames=[f.hex() for f in frames])
    for k, (frame, want, answer) in enumerate(zip(frames, wanted, answers, strict=True)):
        at = f"frame {k} of {len(frames)}: {frame.hex()}"
        check_decoded(frame, answer["decoded"])
        assert answer["reads"] == (2 if frame else 1), at  # the third read was shared
        for take_ in answer["takes"]:
            assert same_why(want["why"], take_["why"]), (at, want["why"], take_["why"])
            assert take_["waiting"] == want["waiting"], at
            assert (take_["tick"] is None) == (want["tick"] is None), at
            if want["tick"] is not None:
                assert float(take_["tick"]) == float(want["tick"]), at
            assert take_["eids"] == want["eids"], at
            if want["eids"] is not None:
                assert take_["count"] == len(want["eids"]), at
            assert numbers(take_["seqs"]) == numbers(want["seqs"]), at


@dataclass(frozen=True)
class Crowd:
    """Players in one cell at tick 1 (eid, x, y, seq, fields), the moves of tick 2 (who: an
    index into them, modulo their number), and eids that are not there."""

    fields: int
    players: list[tuple[int, float, float, int, tuple[Any, ...]]]
    moves: list[tuple[int, float, float, int, tuple[Any, ...]]]
    absent: list[int]


@st.composite
def crowds(draw: st.DrawFn) -> Crowd:
    fields = draw(st.integers(0, 2))
    values = st.tuples(*[scalars] * fields)
    eid = st.integers(0, 300) | st.integers(0, 70_000)  # all three MessagePack forms
    seq = st.integers(0, 300) | st.integers(0, 2**64 - 1)
    players = draw(st.lists(st.tuples(eid, coordinates, coordinates, seq, values),
                            unique_by=lambda p: p[0], max_size=25))
    moves = draw(st.lists(st.tuples(st.integers(0, 99), coordinates, coordinates, seq, values),
                          max_size=10))
    return Crowd(fields, players, moves, draw(st.lists(eid, max_size=5)))


def landing(payload: bytes, needle: bytes) -> int:
    """Where bench/v2.py's OwnEntry search lands (ownSeqBySearch's too): the first place
    after the `update` key where the needle is followed, four bytes on, by y's 0xca."""
    at = payload.find(b"\xa6update")
    while at >= 0:
        at = payload.find(needle, at)
        if at < 0 or payload[at + len(needle) + 4:at + len(needle) + 5] == b"\xca":
            return at
        at += 1
    return -1


# A spot where the search lands off an entry (see the test): player 3's x is the float32
# 43 94 05 ca and its y ends in ca, which reads as eid 5's needle (94 05 ca) and y's marker.
OFF_ENTRY = Crowd(0, [(3, struct.unpack(">f", bytes.fromhex("439405ca"))[0],
                       struct.unpack(">f", bytes.fromhex("42c800ca"))[0], 7, ()),
                      (5, 1.0, 2.0, 42, ())], [], [])


@needs_node
@examples(150)
@example(crowd=OFF_ENTRY)
@given(crowds())
def test_own_seq_by_search_finds_what_a_full_decode_finds(node: Node, crowd: Crowd) -> None:
    """ownSeqBySearch (an unchecked client's read of its own entry) in real snapshots of a
    zone (complete at tick 1, then tick 2's delta and complete), for every eid present and
    some absent: the seq of the eid's update entry as a full decode reads it, or -1.

    Save where the search lands off an entry: an entry of another player whose position's
    float32 bytes (or a str field) hold the eid's needle (0x94 + fields, the eid, 0xca)
    and y's marker four bytes on. Then it reads a seq that is not the eid's (or one for an
    eid that has no entry): a limitation of the search, bench/v2.py's OwnEntry's as well,
    which it must then agree with. A position of the zone's bounds lands so about once in
    2^24 entries (a needle of three bytes: eids below 128)."""
    zone = Interest("z1", Grid(*BOUNDS, 0.0), epoch="e1",
                    fields=tuple(f"f{i}" for i in range(crowd.fields)))
    for eid, x, y, seq, values in crowd.players:
        zone.enter(eid, f"char-{eid}", f"name{eid}", x, y, seq, values)
    zone.seal(1)
    complete, base = zone.view(0).encoded(V2, None)
    entries = [{eid: e.update for eid, e in zone.entities.items()}]  # as written, each tick
    for who, x, y, seq, values in crowd.moves:
        if crowd.players:
            zone.update(crowd.players[who % len(crowd.players)][0], x, y, seq, values)
    zone.seal(2)
    entries += [{eid: e.update for eid, e in zone.entities.items()}] * 2
    payloads = [complete, zone.view(0).encoded(V2, base)[0], zone.view(0).encoded(V2, None)[0]]
    eids = [p[0] for p in crowd.players] + crowd.absent
    needles = [update_head(eid, crowd.fields) + b"\xca" for eid in eids]
    answers = node.ask("own", cases=[{"payload": p.hex(), "needles": [n.hex() for n in needles]}
                                     for p in payloads])
    for payload, written, found in zip(payloads, entries, answers, strict=True):
        seqs: dict[int, int] = {}
        for entry in decode(payload)["update"]:
            seqs.setdefault(entry[0], entry[3])
        for eid, needle, seq in zip(eids, needles, found, strict=True):
            own = OwnEntry(eid, crowd.fields).entry(payload)
            assert float(seq) == float(-1 if own is None else own[0]), (eid, payload.hex())
            start = payload.find(written[eid]) if eid in seqs else -1
            if landing(payload, needle) == start:  # on its entry, or nowhere and none
                assert float(seq) == float(seqs.get(eid, -1)), (eid, payload.hex())
    if crowd is OFF_ENTRY:
        assert answers[0] == [7, 63], "the search landed on player 3's x, as said above"


# --- a Player's frame parser -------------------------------------------------------------

BINARY, CONTINUATION, PING, PONG, CLOSE = 0x2, 0x0, 0x9, 0xA, 0x8


def server_frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = False) -> bytes:
    """A frame as a server writes one (unmasked), in the shortest length form."""
    first = (0x80 if fin else 0) | opcode
    mask = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        head = bytes((first, mask | n))
    elif n < 1 << 16:
        head = bytes((first, mask | 126)) + struct.pack(">H", n)
    else:
        head = bytes((first, mask | 127)) + struct.pack(">Q", n)
    return head + (b"\0\0\0\0" if masked else b"") + payload


payloads = st.one_of(st.binary(max_size=140),
                     st.integers(126, 1 << 16).map(lambda n: bytes(range(256)) * (n // 256)
                                                    + bytes(n % 256)),
                     st.integers((1 << 16), (1 << 16) + 300).map(lambda n: b"\x07" * n))


@dataclass
class Stream:
    frames: list[bytes]
    expected: list[list[object]]  # what the parser hands on, in order
    failed: list[str]


@st.composite
def streams(draw: st.DrawFn) -> Stream:
    """Messages (whole or in fragments), pings and pongs, and at the end perhaps a close,
    or a frame no server sends (masked)."""
    frames: list[bytes] = []
    expected: list[list[object]] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["message", "message", "ping", "pong"]))
        payload = draw(payloads) if kind == "message" else draw(st.binary(max_size=125))
        if kind == "message":
            cuts = sorted(draw(st.sets(st.integers(1, max(1, len(payload) - 1)), max_size=3)))
            parts = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)],
                                                    strict=True)] if len(payload) > 1 \
                else [payload]
            frames += [server_frame(BINARY if i == 0 else CONTINUATION, part,
                                    fin=i == len(parts) - 1) for i, part in enumerate(parts)]
            expected.append(["message", payload.hex()])
        else:
            frames.append(server_frame(PING if kind == "ping" else PONG, payload))
            if kind == "ping":
                expected.append(["write", 0x80 | PONG])
    end = draw(st.sampled_from(["none", "close", "masked"]))
    failed: list[str] = []
    if end == "close":
        frames.append(server_frame(CLOSE, struct.pack(">H", 1001)))
        expected.append(["write", 0x80 | CLOSE])  # its answer
    elif end == "masked":
        frames.append(server_frame(BINARY, b"x", masked=True))
        failed.append("a masked server frame")
    return Stream(frames, expected, failed)


@needs_node
@examples(100)
@given(streams(), st.data())
def test_a_players_frames_are_read_whole_however_the_reads_cut_them(
    node: Node, stream: Stream, data: st.DataObject
) -> None:
    """Every message, fragmented or not, with 7-, 16- and 64-bit lengths, comes out whole
    and in order, pings are answered and a close ends the stream, wherever the reads
    cut the bytes (a header included) and though the read buffer is reused at once."""
    whole = b"".join(stream.frames)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(whole) - 1)), max_size=12)))
    chunks = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)] \
        if whole else []
    answer = node.ask("frames", chunks=[c.hex() for c in chunks])
    assert answer["seen"] == stream.expected
    assert answer["failed"] == stream.failed
    closed = ["1001"] if stream.expected[-1:] == [["write", 0x80 | CLOSE]] \
        else ["broken stream"] if stream.failed else []
    assert answer["closed"] == closed
