// MessagePack, just what protocol v2 needs (docs/protocol.md, "World, protocol v2"):
// decode any value the server sends, encode the maps a client sends. No dependencies.

const textDecoder = new TextDecoder();
const textEncoder = new TextEncoder();

export function decode(buffer) {
  const bytes = buffer instanceof Uint8Array ? buffer : new Uint8Array(buffer);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;

  function str(length) {
    const value = textDecoder.decode(bytes.subarray(at, at + length));
    at += length;
    return value;
  }
  function array(length) {
    const out = new Array(length);
    for (let i = 0; i < length; i++) out[i] = read();
    return out;
  }
  function map(length) {
    const out = {};
    for (let i = 0; i < length; i++) {
      const key = read();
      out[key] = read();
    }
    return out;
  }
  function bin(length) {
    const value = bytes.slice(at, at + length);
    at += length;
    return value;
  }
  function read() {
    const first = bytes[at++];
    if (first < 0x80) return first;
    if (first < 0x90) return map(first & 0x0f);
    if (first < 0xa0) return array(first & 0x0f);
    if (first < 0xc0) return str(first & 0x1f);
    if (first >= 0xe0) return first - 0x100;
    let value;
    switch (first) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: value = bytes[at]; at += 1; return bin(value);
      case 0xc5: value = view.getUint16(at); at += 2; return bin(value);
      case 0xc6: value = view.getUint32(at); at += 4; return bin(value);
      case 0xca: value = view.getFloat32(at); at += 4; return value;
      case 0xcb: value = view.getFloat64(at); at += 8; return value;
      case 0xcc: value = bytes[at]; at += 1; return value;
      case 0xcd: value = view.getUint16(at); at += 2; return value;
      case 0xce: value = view.getUint32(at); at += 4; return value;
      case 0xcf: value = Number(view.getBigUint64(at)); at += 8; return value;
      case 0xd0: value = view.getInt8(at); at += 1; return value;
      case 0xd1: value = view.getInt16(at); at += 2; return value;
      case 0xd2: value = view.getInt32(at); at += 4; return value;
      case 0xd3: value = Number(view.getBigInt64(at)); at += 8; return value;
      case 0xd9: value = bytes[at]; at += 1; return str(value);
      case 0xda: value = view.getUint16(at); at += 2; return str(value);
      case 0xdb: value = view.getUint32(at); at += 4; return str(value);
      case 0xdc: value = view.getUint16(at); at += 2; return array(value);
      case 0xdd: value = view.getUint32(at); at += 4; return array(value);
      case 0xde: value = view.getUint16(at); at += 2; return map(value);
      case 0xdf: value = view.getUint32(at); at += 4; return map(value);
      default: throw new Error(`MessagePack type 0x${first.toString(16)} is not supported`);
    }
  }

  const value = read();
  if (at !== bytes.length) throw new Error("trailing bytes after a MessagePack value");
  return value;
}

export function encode(value) {
  const parts = [];
  let size = 0;
  function push(bytes) {
    parts.push(bytes);
    size += bytes.length;
  }
  function header(small, base, length) {
    if (length < small) push(Uint8Array.of(base | length));
    else if (length < 0x10000) push(Uint8Array.of(base === 0x90 ? 0xdc : base === 0x80 ? 0xde : 0xda,
                                                  length >> 8, length & 0xff));
    else throw new Error("too long for this encoder");
  }
  function write(v) {
    if (v === null || v === undefined) push(Uint8Array.of(0xc0));
    else if (v === true || v === false) push(Uint8Array.of(v ? 0xc3 : 0xc2));
    else if (typeof v === "number") {
      if (Number.isInteger(v) && v >= 0 && v < 0x100000000) {
        if (v < 0x80) push(Uint8Array.of(v));
        else {
          const out = new Uint8Array(5);
          out[0] = 0xce;
          new DataView(out.buffer).setUint32(1, v);
          push(out);
        }
      } else {
        const out = new Uint8Array(9);
        out[0] = 0xcb;
        new DataView(out.buffer).setFloat64(1, v);
        push(out);
      }
    } else if (typeof v === "string") {
      const raw = textEncoder.encode(v);
      header(32, 0xa0, raw.length);
      push(raw);
    } else if (Array.isArray(v)) {
      header(16, 0x90, v.length);
      v.forEach(write);
    } else {
      const keys = Object.keys(v);
      header(16, 0x80, keys.length);
      for (const key of keys) {
        write(key);
        write(v[key]);
      }
    }
  }
  write(value);
  const out = new Uint8Array(size);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}
