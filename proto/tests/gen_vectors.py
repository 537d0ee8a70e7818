#!/usr/bin/env python3
"""Writes ../vectors.json: readyfd protocol test vectors, computed from
PROTOCOL.md with nothing but `struct`, independently of the Rust encoder.

    python3 proto/tests/gen_vectors.py          # rewrite proto/vectors.json
    python3 proto/tests/gen_vectors.py --check  # fail if it is out of date

`tests/vectors.rs` then checks the Rust implementation against the file in
both directions. Never regenerate the file from Rust output: the point is
that two encoders written from the spec agree.
"""

import ipaddress
import json
import os
import struct
import sys

DEFAULT_MAX_FRAME = 16 * 1024 * 1024

# ---- primitives (PROTOCOL.md, "Field encoding") ----------------------------


def u8(v):
    return struct.pack("<B", v)


def u16(v):
    return struct.pack("<H", v)


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def string(s):
    b = s.encode("utf-8")
    return u64(len(b)) + b


def option(v, enc):
    return u8(0) if v is None else u8(1) + enc(v)


def variant(i):
    return u32(i)


def socket_addr(text):
    """"1.2.3.4:80" or "[::1]:80" -> variant u32, raw octets, u16 port."""
    host, _, port = text.rpartition(":")
    ip = ipaddress.ip_address(host.strip("[]"))
    tag = 0 if ip.version == 4 else 1
    return variant(tag) + ip.packed + u16(int(port))


ADDRESS = {"Tcp": 0, "Udp": 1, "Unix": 2, "Text": 3}
ROLE = {"Parent": 0, "Child": 1}
REMOTE_ERROR_KIND = {"Unsupported": 0, "BadRequest": 1, "Failed": 2, "ShuttingDown": 3, "Dropped": 4}
GOODBYE_REASON = {"Done": 0, "ShuttingDown": 1, "ProtocolError": 2, "VersionMismatch": 3}
KIND = {"Hello": 1, "Ready": 2, "Request": 3, "Response": 4, "Notify": 5, "Status": 6, "Goodbye": 7}


def address(a):
    (variant_name, value), = a.items()
    tag = ADDRESS[variant_name]
    if variant_name in ("Tcp", "Udp"):
        return variant(tag) + socket_addr(value)
    return variant(tag) + string(value)


# ---- messages (PROTOCOL.md, "Messages") ------------------------------------


def payload(msg):
    (kind, m), = msg.items()
    if kind == "Hello":
        return b"RDFD" + u16(m["version"]) + u32(m["pid"]) + variant(ROLE[m["role"]]) + u32(m["max_frame"])
    if kind == "Ready":
        out = u32(m["pid"]) + u64(len(m["addresses"]))
        for e in m["addresses"]:
            out += string(e["name"]) + address(e["address"])
        return out + option(m["status"], string)
    if kind == "Request":
        body = m["body"]
        if body == "Ping":
            return u64(m["id"]) + variant(0)
        if "Shutdown" in body:
            return u64(m["id"]) + variant(1) + option(body["Shutdown"]["grace_ms"], u64)
        return u64(m["id"]) + variant(2) + bytes.fromhex(body["App"])
    if kind == "Response":
        body = m["body"]
        if body == "Ok":
            return u64(m["id"]) + variant(0)
        if "App" in body:
            return u64(m["id"]) + variant(1) + bytes.fromhex(body["App"])
        err = body["Error"]
        return u64(m["id"]) + variant(2) + variant(REMOTE_ERROR_KIND[err["kind"]]) + string(err["message"])
    if kind == "Notify":
        return bytes.fromhex(m)
    if kind == "Status":
        return string(m)
    if kind == "Goodbye":
        return variant(GOODBYE_REASON[m["reason"]]) + string(m["message"])
    raise ValueError(kind)


def frame(kind_byte, p):
    return u32(len(p)) + u8(kind_byte) + p


def encode(msg):
    (kind, _), = msg.items()
    return frame(KIND[kind], payload(msg))


# ---- the vectors -----------------------------------------------------------

valid = []


def v(name, description, message):
    valid.append({"name": name, "description": description, "message": message, "frame": encode(message).hex()})


def hello(role, pid, max_frame=DEFAULT_MAX_FRAME, version=1):
    return {"Hello": {"version": version, "pid": pid, "role": role, "max_frame": max_frame}}


def ready(pid, addresses=(), status=None):
    return {"Ready": {"pid": pid, "addresses": [{"name": n, "address": a} for n, a in addresses], "status": status}}


v("hello_parent", "The parent's Hello with the default 16 MiB maximum.", hello("Parent", 4121))
v("hello_child", "A child's Hello announcing a 64 KiB maximum.", hello("Child", 4122, 65536))
v("hello_max_values", "Largest pid and maximum.", hello("Child", 0xFFFFFFFF, 0xFFFFFFFF))
v("ready_minimal", "Ready with no address and no status.", ready(4122))
v("ready_status_only", "Ready with a status line and no address.", ready(4122, status="listening"))
v("ready_tcp_v4", "One TCP address, IPv4.", ready(4122, [("http", {"Tcp": "127.0.0.1:41234"})]))
v("ready_tcp_v6", "One TCP address, IPv6.", ready(4122, [("https", {"Tcp": "[2001:db8::1]:8443"})]))
v("ready_udp", "UDP addresses, IPv4 and IPv6 (unspecified and loopback).",
  ready(4122, [("dns", {"Udp": "0.0.0.0:53"}), ("dns6", {"Udp": "[::1]:5353"})]))
v("ready_unix", "Unix socket paths: a filesystem path and an abstract name.",
  ready(4122, [("control", {"Unix": "/run/app/control.sock"}), ("abstract", {"Unix": "@app"})]))
v("ready_text", "Text addresses, one with an empty name.",
  ready(4122, [("bus", {"Text": "unix:path=/tmp/dbus-x,guid=0123"}), ("", {"Text": ":1"})]))
v("ready_everything", "Every address variant, a claimed pid other than the child's, a non-ASCII status.",
  ready(77, [
      ("http", {"Tcp": "10.0.0.2:80"}),
      ("http6", {"Tcp": "[fe80::1:2:3:4]:65535"}),
      ("stats", {"Udp": "192.168.1.1:0"}),
      ("sock", {"Unix": "/tmp/é.sock"}),
      ("url", {"Text": "http://127.0.0.1:80/"}),
  ], status="prêt ✓"))
v("request_ping", "Ping, id 1.", {"Request": {"id": 1, "body": "Ping"}})
v("request_ping_max_id", "Ping with the largest id.", {"Request": {"id": 0xFFFFFFFFFFFFFFFF, "body": "Ping"}})
v("request_shutdown_default", "Shutdown without a grace period.", {"Request": {"id": 2, "body": {"Shutdown": {"grace_ms": None}}}})
v("request_shutdown_grace", "Shutdown within 5 s.", {"Request": {"id": 3, "body": {"Shutdown": {"grace_ms": 5000}}}})
v("request_app", "An application request whose body is the string \"config: fast=true\".",
  {"Request": {"id": 4, "body": {"App": string("config: fast=true").hex()}}})
v("request_app_empty", "An application request with an empty body (a unit type).",
  {"Request": {"id": 5, "body": {"App": ""}}})
v("response_ok", "Ok, the answer to Ping 1.", {"Response": {"id": 1, "body": "Ok"}})
v("response_app", "An application answer: the bool true.", {"Response": {"id": 4, "body": {"App": "01"}}})
v("response_app_empty", "An application answer with an empty body.", {"Response": {"id": 6, "body": {"App": ""}}})
for kind, msg in [("Unsupported", "no handler for requests"), ("BadRequest", "expected a Config"),
                  ("Failed", "disk full"), ("ShuttingDown", ""), ("Dropped", "handler panicked")]:
    v("response_error_" + kind.lower(), "A remote error of kind " + kind + ".",
      {"Response": {"id": 9, "body": {"Error": {"kind": kind, "message": msg}}}})
v("notify_empty", "A notification with an empty payload: a unit body.", {"Notify": ""})
v("notify_body", "A notification whose body is the u32 7 followed by the string \"hi\".",
  {"Notify": (u32(7) + string("hi")).hex()})
v("status", "A status line.", {"Status": "loading 3/10"})
v("status_empty", "An empty status line.", {"Status": ""})
v("status_unicode", "A status line outside ASCII.", {"Status": "準備中 🚀"})
for reason, msg in [("Done", ""), ("ShuttingDown", "SIGTERM"), ("ProtocolError", "second Ready"),
                    ("VersionMismatch", "we speak version 1, the peer 2")]:
    v("goodbye_" + reason.lower(), "Goodbye, reason " + reason + ".", {"Goodbye": {"reason": reason, "message": msg}})

# A Hello of another version: only magic and version are read.
decode_only = [
    {
        "name": "hello_version_2_longer",
        "description": "A Hello of version 2 whose layout grew: only the magic and the version are read, "
                       "the rest is ignored; pid, role and max_frame decode as 0, Parent, 0.",
        "frame": frame(1, b"RDFD" + u16(2) + bytes(range(30))).hex(),
        "message": hello("Parent", 0, 0, version=2),
    },
    {
        "name": "hello_version_0_short",
        "description": "A 6-byte Hello of version 0.",
        "frame": frame(1, b"RDFD" + u16(0)).hex(),
        "message": hello("Parent", 0, 0, version=0),
    },
]

invalid = []


def bad(name, description, stream, error, max_frame=DEFAULT_MAX_FRAME):
    invalid.append({"name": name, "description": description, "max_frame": max_frame,
                    "stream": stream.hex(), "error": error})


def message_error(kind_byte, p, error, name, description):
    bad(name, description, frame(kind_byte, p), dict(layer="message", **error))


good_hello = payload(hello("Child", 4122))
bad("frame_length_ffffffff", "A header announcing 4 GiB - 1: rejected on the header alone, before anything is read or reserved.",
    u32(0xFFFFFFFF) + u8(1), {"layer": "frame", "error": "TooLarge", "len": 0xFFFFFFFF, "max": DEFAULT_MAX_FRAME})
bad("frame_over_announced_max", "One byte over a 64 KiB maximum; only the header was sent.",
    u32(65537) + u8(5), {"layer": "frame", "error": "TooLarge", "len": 65537, "max": 65536}, max_frame=65536)
bad("frame_truncated_header", "The stream ends after 3 header bytes.",
    bytes.fromhex("120000"), {"layer": "frame", "error": "Truncated", "have": 3, "need": 5})
bad("frame_oversized_length_truncated_header",
    "Four header bytes announcing 4 GiB - 1, then end of stream: the length is checked once the whole 5-byte header "
    "has arrived, so this is a truncated header, not TooLarge.",
    u32(0xFFFFFFFF), {"layer": "frame", "error": "Truncated", "have": 4, "need": 5})
bad("frame_truncated_payload", "The stream ends inside a Hello's payload.",
    frame(1, good_hello)[:12], {"layer": "frame", "error": "Truncated", "have": 12, "need": 23})
message_error(0x00, b"", {"error": "UnknownKind", "kind": 0}, "unknown_kind_0", "Kind 0 is not a message.")
message_error(0x08, b"\x01\x02", {"error": "UnknownKind", "kind": 8}, "unknown_kind_8", "Kind 8 is not a message of version 1.")
message_error(0xFF, b"", {"error": "UnknownKind", "kind": 255}, "unknown_kind_ff", "Kind 0xff.")
message_error(1, good_hello + b"\x00", {"error": "TrailingBytes", "extra": 1}, "hello_trailing_byte", "A version-1 Hello with one byte too many.")
message_error(3, payload({"Request": {"id": 1, "body": "Ping"}}) + b"\xAA\xBB", {"error": "TrailingBytes", "extra": 2},
              "ping_trailing_bytes", "A Ping with two trailing bytes (only App bodies take the rest of the payload).")
message_error(4, payload({"Response": {"id": 1, "body": "Ok"}}) + b"\x00", {"error": "TrailingBytes", "extra": 1},
              "response_ok_trailing_byte", "A Response Ok with a trailing byte.")
message_error(6, string("ok") + b"\x00\x00\x00", {"error": "TrailingBytes", "extra": 3}, "status_trailing_bytes", "A Status with three trailing bytes.")
message_error(6, u64(2) + b"\xFF\xFE", {"error": "InvalidUtf8"}, "status_invalid_utf8", "A Status whose text is not UTF-8.")
message_error(2, u32(1) + u64(1) + u64(1) + b"\xC0" + variant(3) + string("x") + u8(0), {"error": "InvalidUtf8"},
              "ready_name_invalid_utf8", "An endpoint name that is not UTF-8 (an overlong encoding).")
message_error(1, b"RDFX" + good_hello[4:], {"error": "BadMagic", "found": "52444658"}, "hello_bad_magic", "A Hello starting with RDFX.")
message_error(1, b"HTTP/1.1 200 OK\r\n", {"error": "BadMagic", "found": "48545450"}, "hello_http", "Not readyfd at all.")
message_error(1, b"RDFD" + u16(1) + u32(5) + variant(2) + u32(1024), {"error": "InvalidTag", "tag": 2}, "hello_bad_role", "Role 2.")
message_error(3, u64(1) + variant(3), {"error": "InvalidTag", "tag": 3}, "request_bad_tag", "Request tag 3.")
message_error(4, u64(1) + variant(7), {"error": "InvalidTag", "tag": 7}, "response_bad_tag", "Response tag 7.")
message_error(4, u64(1) + variant(2) + variant(5) + string(""), {"error": "InvalidTag", "tag": 5}, "remote_error_bad_kind", "RemoteErrorKind 5.")
message_error(7, variant(4) + string(""), {"error": "InvalidTag", "tag": 4}, "goodbye_bad_reason", "GoodbyeReason 4.")
message_error(2, u32(1) + u64(1) + string("a") + variant(4) + string("x") + u8(0), {"error": "InvalidTag", "tag": 4},
              "ready_bad_address_tag", "Address variant 4.")
message_error(2, u32(1) + u64(1) + string("a") + variant(0) + variant(2) + bytes(4) + u16(1) + u8(0), {"error": "InvalidTag", "tag": 2},
              "ready_bad_socketaddr_tag", "SocketAddr variant 2.")
message_error(2, u32(1) + u64(0) + u8(2), {"error": "InvalidTag", "tag": 2}, "ready_bad_option_tag", "Option tag 2 for the status.")
message_error(3, u64(1) + variant(1) + u8(7) + u64(0), {"error": "InvalidTag", "tag": 7}, "shutdown_bad_option_tag", "Option tag 7 for grace_ms.")
for kind in ["Hello", "Ready", "Request", "Response", "Status", "Goodbye"]:
    message_error(KIND[kind], b"", {"error": "UnexpectedEnd"}, "empty_" + kind.lower(),
                  "An empty " + kind + " payload: only Notify may be empty.")
message_error(1, good_hello[:10], {"error": "UnexpectedEnd"}, "hello_truncated", "A version-1 Hello cut after 10 bytes.")
message_error(3, u64(1)[:5], {"error": "UnexpectedEnd"}, "request_id_truncated", "A request id cut after 5 bytes.")
message_error(6, u64(8) + b"abc", {"error": "UnexpectedEnd"}, "status_short_string",
              "A string claiming 8 bytes with 3 left (within the decoder's budget: see PROTOCOL.md, 'Errors').")
message_error(6, u64(10) + b"abc", {"error": "LimitExceeded"}, "status_string_over_budget",
              "A string claiming 10 bytes with 3 left: 8 + 10 bytes exceed the 16-byte budget of an 11-byte payload.")
message_error(6, u64(1 << 60), {"error": "LimitExceeded"}, "status_claims_2_60_bytes",
              "A string claiming 2^60 bytes: rejected before anything is allocated for it.")
message_error(2, u32(1) + u64(1 << 60), {"error": "LimitExceeded"}, "ready_claims_2_60_endpoints",
              "A Ready claiming 2^60 endpoints and holding none: fails reading the first one (past the payload's "
              "16-byte budget), having allocated nothing for the claim.")
message_error(2, u32(1) + u64(1 << 60) + string("") + variant(2) + string("") + b"\x00", {"error": "UnexpectedEnd"},
              "ready_claims_2_60_endpoints_holds_one",
              "A Ready claiming 2^60 endpoints and holding one (empty name, empty Unix path) and a stray byte: "
              "fails reading the second.")
message_error(2, u32(1) + u64(1) + u64(1 << 60) + b"a", {"error": "LimitExceeded"}, "ready_name_claims_2_60_bytes",
              "An endpoint name claiming 2^60 bytes.")

# ---- session vectors -------------------------------------------------------

sessions = []


def s(name, description, role, frames, result, max_unanswered=65536, output=None):
    entry = {"name": name, "description": description, "role": role, "pid": 100 if role == "Parent" else 200,
             "max_frame": DEFAULT_MAX_FRAME, "max_unanswered": max_unanswered,
             "stream": b"".join(frames).hex(), "result": result}
    if output is not None:
        entry["output"] = output.hex()
    sessions.append(entry)


P = encode(hello("Parent", 100))
C = encode(hello("Child", 200))
READY = encode(ready(200, [("http", {"Tcp": "127.0.0.1:8080"})]))
GOODBYE = encode({"Goodbye": {"reason": "Done", "message": ""}})


def app_request(i):
    return encode({"Request": {"id": i, "body": {"App": "00"}}})


def err(variant_name, **fields):
    return {"error": variant_name, **fields}


s("silent_eof", "The child closed without a byte: EOF class Silent (ready, if the child is alive).", "Parent", [],
  {"eof": "Silent", "events": []})
s("orderly", "Hello, Status, Ready, Notify, Goodbye, EOF.", "Parent",
  [C, encode({"Status": "starting"}), READY, encode({"Notify": ""}), GOODBYE],
  {"eof": "AfterGoodbye", "events": ["Hello", "Status", "Ready", "Notify", "Goodbye"]})
s("abrupt", "Hello and Ready, then EOF without Goodbye.", "Parent", [C, READY],
  {"eof": "Abrupt", "events": ["Hello", "Ready"]})
s("truncated_at_eof", "EOF inside a frame.", "Parent", [C, READY[:7]],
  err("Truncated", have=7, need=len(READY)))
s("ready_before_hello", "Ready as the first frame.", "Parent", [READY], err("HelloExpected", kind="Ready"))
s("second_ready", "Ready twice.", "Parent", [C, READY, READY], err("SecondReady"))
s("ready_from_parent", "A parent sending Ready.", "Child", [P, READY], err("WrongDirection", role="Parent", kind="Ready"))
s("status_from_parent", "A parent sending Status.", "Child", [P, encode({"Status": "x"})],
  err("WrongDirection", role="Parent", kind="Status"))
s("shutdown_from_child", "A child sending Shutdown.", "Parent",
  [C, encode({"Request": {"id": 1, "body": {"Shutdown": {"grace_ms": None}}}})],
  err("WrongDirection", role="Child", kind="Shutdown"))
s("unknown_response_id", "A Response to an id never asked.", "Parent", [C, encode({"Response": {"id": 7, "body": "Ok"}})],
  err("UnknownResponseId", id=7))
s("duplicate_request_id", "Request id 5 reused while unanswered.", "Child", [P, app_request(5), app_request(5)],
  err("DuplicateRequestId", id=5))
s("too_many_unanswered", "Three unanswered requests when two are accepted.", "Child",
  [P, app_request(1), app_request(2), app_request(3)], err("TooManyRequests", max=2), max_unanswered=2)
s("version_mismatch", "A version-2 Hello (with a layout of its own after offset 6).", "Parent",
  [frame(1, b"RDFD" + u16(2) + b"\x00" * 20)], err("VersionMismatch", ours=1, theirs=2))
s("role_conflict", "Two parents.", "Parent", [P], err("RoleConflict", role="Parent"))
s("max_frame_too_small", "A Hello announcing a maximum of 4095 bytes, one below the protocol minimum.", "Parent",
  [encode(hello("Child", 200, 4095))], err("MaxFrameTooSmall", announced=4095, min=4096))
s("hello_checks_version_first", "A version-2 Hello laid out as version 1's, announcing role parent to a parent "
  "and a maximum of 0: the version is checked before the role and the maximum.",
  "Parent", [frame(1, b"RDFD" + u16(2) + u32(100) + u32(0) + u32(0))], err("VersionMismatch", ours=1, theirs=2))
s("hello_checks_role_before_max_frame", "A parent's Hello to a parent, announcing a maximum of 0: the role is "
  "checked before the maximum.", "Parent", [encode(hello("Parent", 100, 0))], err("RoleConflict", role="Parent"))
s("duplicate_id_before_too_many", "Request id 5 reused while unanswered, at the limit of one unanswered request: "
  "the reuse is reported, not the limit.", "Child", [P, app_request(5), app_request(5)],
  err("DuplicateRequestId", id=5), max_unanswered=1)
s("duplicate_hello", "Hello twice.", "Parent", [C, C], err("DuplicateHello"))
s("after_goodbye", "A Notify after Goodbye.", "Parent", [C, GOODBYE, encode({"Notify": ""})], err("AfterGoodbye", kind="Notify"))
s("ping_is_answered", "A Ping is answered by the library: the child's Hello, then Response Ok with the same id.", "Child",
  [P, encode({"Request": {"id": 9, "body": "Ping"}})], {"eof": "Abrupt", "events": ["Hello"]},
  output=encode(hello("Child", 200)) + encode({"Response": {"id": 9, "body": "Ok"}}))

# ---- file descriptors (PROTOCOL.md, section 2.1) ------------------------------

FD_FLAG = 0x80


def fd_frame(msg, fds):
    (kind, _), = msg.items()
    return frame(KIND[kind] | FD_FLAG, u8(fds) + payload(msg))


fd_valid = []


def fv(name, description, message, fds):
    fd_valid.append({"name": name, "description": description, "message": message, "fds": fds,
                     "frame": fd_frame(message, fds).hex()})


fv("fd_notify", "Notify with body 'hi' and 2 fds: kind 0x85, count 2.", {"Notify": b"hi".hex()}, 2)
fv("fd_notify_empty_253", "An empty Notify with the most fds a frame may carry.", {"Notify": ""}, 253)
fv("fd_ready", "Ready with 1 fd (a listening socket, say).",
   {"Ready": {"pid": 4122, "addresses": [], "status": None}}, 1)
fv("fd_request_app", "An application request with 3 fds.", {"Request": {"id": 4, "body": {"App": "07"}}}, 3)
fv("fd_response_app", "An application response with 1 fd.", {"Response": {"id": 4, "body": {"App": ""}}}, 1)

fd_invalid = []


def fi(name, description, fr, error):
    fd_invalid.append({"name": name, "description": description, "frame": fr.hex(), "error": error})


fi("fd_on_status", "The fd flag on Status.", frame(0x86, u8(1) + string("x")), {"error": "FdsNotAllowed", "kind": "Status"})
fi("fd_on_hello", "The fd flag on Hello.", frame(0x81, u8(1)), {"error": "FdsNotAllowed", "kind": "Hello"})
fi("fd_on_goodbye", "The fd flag on Goodbye.", frame(0x87, u8(1)), {"error": "FdsNotAllowed", "kind": "Goodbye"})
fi("fd_count_zero", "A flagged Notify announcing 0 fds.", frame(0x85, u8(0)), {"error": "BadFdCount", "count": 0})
fi("fd_count_254", "A flagged Notify announcing 254 fds.", frame(0x85, u8(254)), {"error": "BadFdCount", "count": 254})
fi("fd_no_count", "A flagged Notify without its count byte.", frame(0x85, b""), {"error": "UnexpectedEnd"})
fi("fd_flag_alone", "0x80: the flag on no kind.", frame(0x80, u8(1)), {"error": "UnknownKind", "kind": 0x80})

fd_sessions = []


def fs(name, description, reads, result):
    fd_sessions.append({"name": name, "description": description,
                        "reads": [dict({"bytes": b.hex(), "fds": n}, **({"truncated": True} if t else {}))
                                  for (b, n, t) in reads],
                        "result": result})


NOTE3 = fd_frame({"Notify": "78"}, 3)
fs("fd_last_frame_in_the_read", "Hello, a plain Notify, then a Notify with 3 fds, in one read with 3 fds.",
   [(C + encode({"Notify": "61"}) + NOTE3, 3, False)], {"fds": [0, 0, 3]})
fs("fd_frame_split", "The fd frame's first 2 bytes bring its fds; the rest follows without.",
   [(C, 0, False), (NOTE3[:2], 3, False), (NOTE3[2:], 0, False)], {"fds": [0, 3]})
fs("fd_fewer", "A frame announcing 3 fds arrives with 2.", [(C, 0, False), (NOTE3, 2, False)],
   {"error": "FdCountMismatch", "announced": 3, "arrived": 2})
fs("fd_more", "A frame announcing 3 fds arrives with 4.", [(C, 0, False), (NOTE3, 4, False)],
   {"error": "FdCountMismatch", "announced": 3, "arrived": 4})
fs("fd_unflagged", "A plain Notify arrives with 1 fd.", [(C, 0, False), (encode({"Notify": "78"}), 1, False)],
   {"error": "FdCountMismatch", "announced": 0, "arrived": 1})
fs("fd_mid_frame", "fds arrive with bytes in the middle of a frame.",
   [(C, 0, False), (NOTE3[:3], 3, False), (NOTE3[3:], 1, False)],
   {"error": "UnexpectedFds", "count": 1})
fs("fd_truncated", "The control message was cut (MSG_CTRUNC).", [(C, 0, True)], {"error": "FdsTruncated"})

doc = {
    "description": "Test vectors for the readyfd wire protocol, version 1. See PROTOCOL.md, section "
                   "'Test vectors', for the JSON forms. Generated by proto/tests/gen_vectors.py from the "
                   "specification with Python's struct module, not from the Rust encoder.",
    "protocol_version": 1,
    "default_max_frame": DEFAULT_MAX_FRAME,
    "valid": valid,
    "decode_only": decode_only,
    "invalid": invalid,
    "sessions": sessions,
    "fd_valid": fd_valid,
    "fd_invalid": fd_invalid,
    "fd_sessions": fd_sessions,
}

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "vectors.json")
text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
if "--check" in sys.argv:
    with open(path, encoding="utf-8") as f:
        if f.read() != text:
            sys.exit("proto/vectors.json is out of date: run python3 proto/tests/gen_vectors.py")
else:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {len(valid)} valid, {len(decode_only)} decode-only, {len(invalid)} invalid, {len(sessions)} session vectors")
