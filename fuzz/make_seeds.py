#!/usr/bin/env python3
"""Seeds the fuzz corpus from proto/vectors.json and a few hand-made inputs.

    python3 fuzz/make_seeds.py        # writes fuzz/corpus/<target>/seed-*

Input layouts (see proto/harness/src/):
  frame_decoder   [max selector][chunking seed][byte stream]
  message_decode  [kind][payload]
  session         [parent config][child config] then ops: [op][operands]...
                  op bit 0: side (0 parent, 1 child); (op >> 1) % 8:
                  0 raw bytes [len][bytes], 1 forged message, 2/3 API send,
                  4 deliver [n], 5 abandon, 6 EOF, 7 respond
  app_body        [0][body] or [1][byte stream of frames]

After a fuzzing run, `cargo fuzz cmin <target>` keeps what adds coverage.
"""

import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "..", "proto", "vectors.json"), encoding="utf-8") as f:
    V = json.load(f)


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def string(s):
    b = s.encode()
    return u64(len(b)) + b


def frame(kind, payload):
    return u32(len(payload)) + bytes([kind]) + payload


valid = [bytes.fromhex(t["frame"]) for t in V["valid"]]

# message_decode: kind byte + payload, i.e. the frame minus its length.
for t in V["valid"] + V["decode_only"]:
    write("message_decode", t["name"], bytes.fromhex(t["frame"])[4:])
for t in V["invalid"]:
    if t["error"]["layer"] == "message":
        write("message_decode", "invalid-" + t["name"], bytes.fromhex(t["stream"])[4:])

# frame_decoder: every valid frame back to back, under several maximums and
# chunkings; each invalid stream under the default-like 64 KiB maximum.
stream = b"".join(valid)
for sel, seed in [(6, 0), (6, 1), (6, 7), (5, 200), (4, 3), (3, 0), (2, 9), (0, 0)]:
    write("frame_decoder", f"all-valid-max{sel}-chunk{seed}", bytes([sel, seed]) + stream)
for t in V["invalid"]:
    if t["error"]["layer"] == "frame":
        write("frame_decoder", "invalid-" + t["name"], bytes([7, 5]) + bytes.fromhex(t["stream"]))
write("frame_decoder", "empty-payloads", bytes([1, 1]) + frame(5, b"") * 4 + frame(9, b""))
write("frame_decoder", "cut-in-header", bytes([6, 2]) + valid[0] + valid[1][:3])
write("frame_decoder", "cut-in-body", bytes([6, 2]) + valid[0] + valid[1][:9])

# session: each session vector's stream fed to its side as raw chunks, then
# EOF; and a few honest conversations through the API.
ROLE_BIT = {"Parent": 0, "Child": 1}
for t in V["sessions"]:
    side = ROLE_BIT[t["role"]]
    data = bytearray([0x0F, 0x0F])
    s = bytes.fromhex(t["stream"])
    for i in range(0, len(s), 200):
        chunk = s[i:i + 200]
        data += bytes([0 << 1 | side, len(chunk)]) + chunk
    data += bytes([6 << 1 | side])
    write("session", "vector-" + t["name"], bytes(data))

PARENT_SEND, CHILD_SEND = 2 << 1, 2 << 1 | 1
PARENT_DELIVER, CHILD_DELIVER = 4 << 1, 4 << 1 | 1
PARENT_RESPOND, CHILD_RESPOND = 7 << 1, 7 << 1 | 1
ready = u32(200) + bytes([2]) + bytes([4]) + b"http" + bytes([0, 0]) + bytes([127, 0, 0, 1]) + struct.pack("<H", 8080) \
    + bytes([4]) + b"sock" + bytes([2, 5]) + b"/s.so" + bytes([1, 2]) + b"ok"
write("session", "honest-ready", bytes([0x0F, 0x0F, PARENT_SEND, 0, CHILD_SEND, 1]) + ready
      + bytes([CHILD_DELIVER, 0, PARENT_DELIVER, 0]))
write("session", "honest-requests", bytes([
    0x0F, 0x0F,
    PARENT_SEND, 3, 2, 3, 1, 2, 3,   # app request, body [1 2 3]
    PARENT_SEND, 6, 4, 0x61, 0x62, 0x63, 0x64,  # typed app request "abcd"
    CHILD_SEND, 4, 0,                # ping
    PARENT_DELIVER, 0, CHILD_DELIVER, 0,
    CHILD_RESPOND, 1, 0,             # answer the first unanswered with Ok
    CHILD_RESPOND, 1, 4, 2, 0x68, 0x69,  # typed app response "hi"
    PARENT_SEND, 5, 1, 1, 0xE8, 0x03, 0, 0, 0, 0, 0, 0,  # shutdown, grace 1000
    CHILD_DELIVER, 0, PARENT_DELIVER, 0,
    CHILD_SEND, 8, 0, 3, 0x62, 0x79, 0x65,  # goodbye Done "bye"
    CHILD_DELIVER, 0,
]))
write("session", "tiny-limits", bytes([0x00, 0x00, PARENT_SEND, 3, 2, 60]) + bytes(60)
      + bytes([PARENT_DELIVER, 0, CHILD_SEND, 7, 40]) + b"x" * 40 + bytes([CHILD_DELIVER, 0]))

# app_body: ExampleBody values (bincode, PROTOCOL.md "Field encoding"), bare
# and inside frames.
bodies = {
    "unit": u32(4),
    "job": u32(1) + u64(42) + u64(3) + b"abc" + "é".encode(),
    "config": u32(0) + string("fast") + bytes([1]) + bytes([1]) + struct.pack("<H", 8)
    + u64(2) + string("a") + string("b") + u64(1) + string("k") + u64(9),
    "listen": u32(2) + u64(1) + u32(0) + u32(0) + bytes([10, 0, 0, 1]) + struct.pack("<H", 80)
    + bytes([1]) + string("ctl") + u32(2) + string("/run/x"),
    "pair": u32(3) + struct.pack("<i", -1) + struct.pack("<q", -2) + b"xyz" + (7).to_bytes(16, "little"),
    "nested": u32(5) + u64(2) + u64(1) + u32(5) + u64(0),
    "reply-ok": u32(6) + u32(0) + u32(1) + u64(0) + bytes([0]),
    "reply-err": u32(6) + u32(1) + u32(2) + string("failed"),
}
for name, b in bodies.items():
    write("app_body", name, bytes([0]) + b)
write("app_body", "in-frames", bytes([1]) + b"".join(
    frame(5, b) if i % 2 else frame(3, u64(i) + u32(2) + b) for i, b in enumerate(bodies.values())))
