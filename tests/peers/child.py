#!/usr/bin/env python3
"""A readyfd native-protocol child, written from proto/PROTOCOL.md alone.

Standard library only. It proves the spec is enough to write a peer: it
takes the channel (section 1), binds a TCP listener on 127.0.0.1:0, sends
Hello and Ready (section 4), reads the parent's Hello, sends a Status and a
Notify of its own, then serves:

- Ping: answered Ok (section 5 rule 9);
- Request App: the body is a bincode String (section 3: u64 length, then
  UTF-8); the answer is a Response App whose body is that string upper-cased,
  or Response Error BadRequest when the body is not a String;
- Shutdown: answered Ok, then Goodbye(ShuttingDown), close, exit 0;
- Notify: one-way, ignored; Goodbye or end of stream: close, exit 0.

Every connection to the listener gets one line, "python peer\n".

Any breach of sections 2-5 by the parent ends the session: Goodbye with
ProtocolError (VersionMismatch for a version mismatch), a line on stderr,
exit 3. A missing or invalid channel is exit 2.

`--hostile=MODE` breaks the protocol on purpose after Ready, once the
parent's Hello has been read, then waits for the parent's Goodbye (exit 0
if its reason is ProtocolError, 5 for another reason, 4 if the stream ends
without one):
  oversized     a Notify one byte longer than the parent's max_frame
  unknown-kind  an empty frame of kind 0x2a
  bad-utf8      a Status whose string is not UTF-8

`--check-vectors=PATH` decodes the frames of proto/vectors.json as the
channel would (see check_vectors) and exits, 0 if every one agreed.
"""

import json
import os
import socket
import stat
import struct
import sys
import threading

VERSION = 1
ROLE_PARENT, ROLE_CHILD = 0, 1
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
MIN_MAX_FRAME = 4096
OUR_MAX_FRAME = DEFAULT_MAX_FRAME

HELLO, READY, REQUEST, RESPONSE, NOTIFY, STATUS, GOODBYE = range(1, 8)
KIND_NAMES = {1: "Hello", 2: "Ready", 3: "Request", 4: "Response",
              5: "Notify", 6: "Status", 7: "Goodbye"}
REQ_PING, REQ_SHUTDOWN, REQ_APP = 0, 1, 2
RESP_OK, RESP_APP, RESP_ERROR = 0, 1, 2
ERR_BAD_REQUEST = 1
BYE_DONE, BYE_SHUTTING_DOWN, BYE_PROTOCOL_ERROR, BYE_VERSION_MISMATCH = range(4)


class ChannelError(Exception):
    """The channel could not be taken (section 1)."""


class ProtocolError(Exception):
    """The parent broke sections 2-5; `reason` is the Goodbye reason to send."""

    def __init__(self, message, reason=BYE_PROTOCOL_ERROR):
        super().__init__(message)
        self.reason = reason


# ---- section 1: taking the channel --------------------------------------

def take_channel():
    """Validates READYFD (and READYFD_INODE) and returns the socket."""
    raw = os.environ.get("READYFD")
    if raw is None:
        raise ChannelError("READYFD is not set: not started by a readyfd parent")
    if not raw.isdigit() or not raw.isascii():
        raise ChannelError("READYFD=%r is not a decimal descriptor number" % raw)
    fd = int(raw)
    identity = os.environ.get("READYFD_INODE")
    expected = None
    if identity is not None:
        parts = identity.split(":")
        if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts):
            raise ChannelError("READYFD_INODE=%r is not <dev>:<ino>" % identity)
        expected = (int(parts[0]), int(parts[1]))
    try:
        st = os.fstat(fd)
    except OSError as e:
        raise ChannelError("READYFD=%d is not an open descriptor: %s" % (fd, e))
    if expected is not None and (st.st_dev, st.st_ino) != expected:
        # Not the parent's descriptor: leave it alone.
        raise ChannelError("READYFD=%d: inherited the variables without the descriptor "
                           "(identity %d:%d, READYFD_INODE=%s)"
                           % (fd, st.st_dev, st.st_ino, identity))
    if not stat.S_ISSOCK(st.st_mode):
        raise ChannelError("READYFD=%d is not a socket" % fd)
    if not os.get_inheritable(fd):
        # exec closed every close-on-exec descriptor: this one was taken
        # before in this process, or opened since at that number.
        raise ChannelError("READYFD=%d: already taken" % fd)
    # socket(fileno=) asks the kernel for the family and type
    # (SO_DOMAIN, SO_TYPE); detach() on failure leaves the fd as it was.
    sock = socket.socket(fileno=fd)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        family, kind = sock.family, sock.type
        sock.detach()
        raise ChannelError("READYFD=%d is a socket of family %s, type %s, "
                           "not AF_UNIX SOCK_STREAM" % (fd, family, kind))
    os.set_inheritable(fd, False)  # close-on-exec at once
    sock.setblocking(True)
    return sock


# ---- section 3: field encoding ------------------------------------------

def enc_string(s):
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def enc_socket_addr(host, port):
    # u32 variant 0 (IPv4), 4 raw octets, u16 port.
    return struct.pack("<I", 0) + socket.inet_aton(host) + struct.pack("<H", port)


class Decoder:
    """Reads one payload exactly; every length is checked against the bytes left."""

    def __init__(self, what, buf):
        self.what, self.buf, self.pos = what, buf, 0

    def left(self):
        return len(self.buf) - self.pos

    def take(self, n):
        if n > self.left():
            raise ProtocolError("%s: unexpected end: needs %d more bytes, %d left"
                                % (self.what, n, self.left()))
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def u8(self):
        return self.take(1)[0]

    def u32(self):
        return struct.unpack("<I", self.take(4))[0]

    def u64(self):
        return struct.unpack("<Q", self.take(8))[0]

    def string(self):
        n = self.u64()
        if n > self.left():  # never trusted for allocation
            raise ProtocolError("%s: a string claims %d bytes, %d left"
                                % (self.what, n, self.left()))
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ProtocolError("%s: invalid utf-8: %s" % (self.what, e))

    def option(self, inner):
        tag = self.u8()
        if tag == 0:
            return None
        if tag == 1:
            return inner()
        raise ProtocolError("%s: invalid Option tag %d" % (self.what, tag))

    def rest(self):
        return self.take(self.left())

    def finish(self):
        if self.left():
            raise ProtocolError("%s: %d trailing bytes" % (self.what, self.left()))


# ---- section 2: frames ---------------------------------------------------

class Channel:
    def __init__(self, sock, our_max=OUR_MAX_FRAME):
        self.sock = sock
        self.our_max = our_max  # announced in our Hello
        self.peer_max = DEFAULT_MAX_FRAME  # until the parent's Hello is read
        self.sent_goodbye = False

    def send(self, kind, payload, check=True):
        if check and len(payload) > self.peer_max:
            raise ValueError("a %s of %d bytes does not fit the parent's maximum %d"
                             % (KIND_NAMES[kind], len(payload), self.peer_max))
        self.sock.sendall(struct.pack("<IB", len(payload), kind) + payload)

    def send_raw(self, data):
        self.sock.sendall(data)

    def goodbye(self, reason, message):
        if self.sent_goodbye:
            return
        self.sent_goodbye = True
        msg = message.encode("utf-8")[:4096].decode("utf-8", "ignore")
        try:
            self.send(GOODBYE, struct.pack("<I", reason) + enc_string(msg))
        except OSError:
            pass  # the parent is gone already

    def read_exact(self, n):
        """n bytes, or fewer if the stream ended (ECONNRESET is end of stream)."""
        chunks, have = [], 0
        while have < n:
            try:
                b = self.sock.recv(min(n - have, 1 << 16))
            except ConnectionResetError:
                b = b""
            if not b:
                break
            chunks.append(b)
            have += len(b)
        return b"".join(chunks)

    def read_frame(self):
        """(kind, payload), or None at end of stream between frames."""
        head = self.read_exact(5)
        if not head:
            return None
        if len(head) < 5:
            raise ProtocolError("truncated: the stream ended after %d of 5 header bytes"
                                % len(head))
        length, kind = struct.unpack("<IB", head)
        # The length is checked on the header alone, before reading the payload.
        if length > self.our_max:
            raise ProtocolError("too large: a frame of %d bytes, our maximum is %d"
                                % (length, self.our_max))
        if kind not in KIND_NAMES:
            # 0x82-0x85 carry descriptors (section 2.1); this peer reads with
            # plain recv, so the kernel discarded them, and section 8 says a
            # peer without fd support fails the session here.
            raise ProtocolError("unknown kind 0x%02x" % kind)
        payload = self.read_exact(length)
        if len(payload) < length:
            raise ProtocolError("truncated: the stream ended after %d of %d bytes of a %s"
                                % (5 + len(payload), 5 + length, KIND_NAMES[kind]))
        if length == 0 and kind != NOTIFY:
            raise ProtocolError("an empty %s payload" % KIND_NAMES[kind])
        return kind, payload


# ---- sections 4 and 5: messages and the session --------------------------

def decode_hello(payload):
    """A Hello's (role, max_frame), decoded in the order of section 5 rule 3."""
    d = Decoder("Hello", payload)
    if len(payload) >= 4 and payload[:4] != b"RDFD":
        raise ProtocolError("bad magic %s: the parent does not speak readyfd"
                            % payload[:4].hex())
    d.take(4)
    if len(payload) >= 6:
        version = struct.unpack("<H", payload[4:6])[0]
        if version != VERSION:
            raise ProtocolError("version mismatch: ours %d, theirs %d" % (VERSION, version),
                                BYE_VERSION_MISMATCH)
    d.take(2)
    d.u32()  # pid
    role = d.u32()
    if role not in (ROLE_PARENT, ROLE_CHILD):
        raise ProtocolError("Hello: invalid role tag %d" % role)
    max_frame = d.u32()
    d.finish()
    return role, max_frame


def check_hello(payload):
    """The parent's Hello: decoded, then the session's checks (rule 3)."""
    role, max_frame = decode_hello(payload)
    if role == ROLE_CHILD:
        raise ProtocolError("role conflict: the peer is a child too")
    if max_frame < MIN_MAX_FRAME:
        raise ProtocolError("max_frame too small: %d announced, at least %d"
                            % (max_frame, MIN_MAX_FRAME))
    return max_frame


def decode_message(kind, payload):
    """Decodes (and checks) a message of `kind`; returns its fields."""
    name = KIND_NAMES[kind]
    d = Decoder(name, payload)
    if kind == HELLO:
        return decode_hello(payload)
    if kind == REQUEST:
        rid, tag = d.u64(), d.u32()
        if tag == REQ_PING:
            body = None
        elif tag == REQ_SHUTDOWN:
            body = d.option(d.u64)
        elif tag == REQ_APP:
            body = d.rest()
        else:
            raise ProtocolError("Request: invalid tag %d" % tag)
        d.finish()
        return rid, tag, body
    if kind == RESPONSE:
        rid, tag = d.u64(), d.u32()
        if tag == RESP_APP:
            d.rest()
        elif tag == RESP_ERROR:
            err = d.u32()
            if err > 4:
                raise ProtocolError("Response: invalid error kind %d" % err)
            d.string()
        elif tag != RESP_OK:
            raise ProtocolError("Response: invalid tag %d" % tag)
        d.finish()
        return rid
    if kind == NOTIFY:
        return d.rest()
    if kind == STATUS:
        s = d.string()
        d.finish()
        return s
    if kind == GOODBYE:
        reason = d.u32()
        if reason > 3:
            raise ProtocolError("Goodbye: invalid reason %d" % reason)
        message = d.string()
        d.finish()
        return reason, message
    if kind == READY:
        d.u32()
        for _ in range(d.u64()):  # each endpoint costs its bytes: no allocation
            d.string()
            variant = d.u32()
            if variant in (0, 1):
                family = d.u32()
                if family not in (0, 1):
                    raise ProtocolError("Ready: invalid SocketAddr tag %d" % family)
                d.take(4 if family == 0 else 16)
                d.take(2)
            elif variant in (2, 3):
                d.string()
            else:
                raise ProtocolError("Ready: invalid Address tag %d" % variant)
        d.option(d.string)
        d.finish()
        return None
    raise AssertionError(kind)


def serve_listener(listener):
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.sendall(b"python peer\n")


def upper_reply(body):
    """The App handler: a bincode String in, that String upper-cased out."""
    d = Decoder("request body", body)
    text = d.string()
    d.finish()
    return enc_string(text.upper())


def run(ch, hostile):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    threading.Thread(target=serve_listener, args=(listener,), daemon=True).start()
    host, port = listener.getsockname()

    pid = os.getpid()
    hello = b"RDFD" + struct.pack("<HIII", VERSION, pid, ROLE_CHILD, OUR_MAX_FRAME)
    endpoint = enc_string("http") + struct.pack("<I", 0) + enc_socket_addr(host, port)
    ready = struct.pack("<IQ", pid, 1) + endpoint + b"\x01" + enc_string("listening")
    # Hello first, without waiting; Ready right behind it (section 5 rule 1).
    ch.send(HELLO, hello)
    ch.send(READY, ready)

    first = ch.read_frame()
    if first is None:
        return 0  # the parent closed without a word
    kind, payload = first
    if kind != HELLO:
        decode_message(kind, payload)  # a malformed frame gives its own error
        raise ProtocolError("expected Hello first, got %s" % KIND_NAMES[kind])
    ch.peer_max = check_hello(payload)

    if hostile:
        try:
            if hostile == "oversized":
                ch.send(NOTIFY, b"\0" * (ch.peer_max + 1), check=False)
            elif hostile == "unknown-kind":
                ch.send_raw(b"\x00\x00\x00\x00\x2a")
            elif hostile == "bad-utf8":
                ch.send(STATUS, struct.pack("<Q", 2) + b"\xff\xfe")
        except OSError:
            pass  # the parent may close before it has read the whole frame
        # The parent must refuse that: Goodbye(ProtocolError), which ends
        # the session (section 5 rule 11: finish and close). Exit 0 if so,
        # 4 if the stream ended without it, 5 for another Goodbye.
        while True:
            frame = ch.read_frame()
            if frame is None:
                return 4
            if frame[0] == GOODBYE:
                reason, _ = decode_message(GOODBYE, frame[1])
                return 0 if reason == BYE_PROTOCOL_ERROR else 5

    ch.send(STATUS, enc_string("serving from python"))
    ch.send(NOTIFY, enc_string("hello from python"))

    while True:
        frame = ch.read_frame()
        if frame is None:
            return 0  # end of stream at a frame boundary
        kind, payload = frame
        fields = decode_message(kind, payload)
        if kind == HELLO:
            raise ProtocolError("duplicate Hello")
        if kind in (READY, STATUS):
            raise ProtocolError("wrong direction: a parent sent %s" % KIND_NAMES[kind])
        if kind == RESPONSE:
            raise ProtocolError("unknown response id %d: we sent no request" % fields)
        if kind == NOTIFY:
            continue
        if kind == GOODBYE:
            return 0  # the parent is done: finish and close
        rid, tag, body = fields
        if tag == REQ_PING:
            ch.send(RESPONSE, struct.pack("<QI", rid, RESP_OK))
        elif tag == REQ_SHUTDOWN:
            ch.send(RESPONSE, struct.pack("<QI", rid, RESP_OK))
            ch.goodbye(BYE_SHUTTING_DOWN, "shutdown requested")
            return 0
        else:
            try:
                answer = struct.pack("<QI", rid, RESP_APP) + upper_reply(body)
            except ProtocolError as e:
                answer = struct.pack("<QI", rid, RESP_ERROR) + struct.pack(
                    "<I", ERR_BAD_REQUEST) + enc_string("the body is not a String: %s" % e)
            ch.send(RESPONSE, answer)


# ---- checking this peer against proto/vectors.json ---------------------

def error_class(e):
    """The section 7 class of one of our errors (the messages above)."""
    m = str(e)
    for needle, cls in (("too large", "TooLarge"), ("truncated:", "Truncated"),
                        ("unknown kind", "UnknownKind"), ("invalid utf-8", "InvalidUtf8"),
                        ("trailing bytes", "TrailingBytes"), ("bad magic", "BadMagic"),
                        ("version mismatch", "VersionMismatch"), ("invalid", "InvalidTag"),
                        ("unexpected end", "UnexpectedEnd"), ("claims", "UnexpectedEnd"),
                        ("an empty", "UnexpectedEnd")):
        if needle in m:
            return cls
    return "?"


def decode_stream(stream, our_max):
    """Reads `stream` (then end of stream) as this peer reads its channel,
    decoding every frame; the number of frames, or the error."""
    a, b = socket.socketpair()
    with a, b:
        a.sendall(stream)
        a.shutdown(socket.SHUT_WR)
        ch = Channel(b, our_max)
        n = 0
        while True:
            frame = ch.read_frame()
            if frame is None:
                return n
            decode_message(*frame)
            n += 1


def check_vectors(path):
    """Decodes each frame of proto/vectors.json that a peer receives: the
    valid ones decode, the invalid ones fail with their class (or the
    other of UnexpectedEnd and LimitExceeded, whose choice section 7 calls
    an artefact of the reference decoder). Frames with file descriptors
    are UnknownKind here: this peer does not support them (section 8)."""
    with open(path) as f:
        vectors = json.load(f)
    failures, checked = [], 0

    def expect(name, stream, our_max, want):
        nonlocal checked
        checked += 1
        try:
            got = "ok, %d frame(s)" % decode_stream(bytes.fromhex(stream), our_max)
            cls = None
        except ProtocolError as e:
            got, cls = "%s (%s)" % (error_class(e), e), error_class(e)
        if want == "LimitExceeded":
            want = "UnexpectedEnd"
        if (want is None and cls is not None) or (want is not None and cls != want):
            failures.append("%s: want %s, got %s" % (name, want or "ok", got))

    for v in vectors["valid"]:
        expect(v["name"], v["frame"], DEFAULT_MAX_FRAME, None)
    for v in vectors["decode_only"]:
        expect(v["name"], v["frame"], DEFAULT_MAX_FRAME, "VersionMismatch")
    for v in vectors["invalid"]:
        expect(v["name"], v["stream"], v["max_frame"], v["error"]["error"])
    for v in vectors["fd_valid"] + vectors["fd_invalid"]:
        expect(v["name"], v["frame"], DEFAULT_MAX_FRAME, "UnknownKind")
    for line in failures:
        print("vector " + line, file=sys.stderr)
    print("%d vectors checked, %d failed" % (checked, len(failures)))
    return 1 if failures else 0


def main():
    hostile = None
    for arg in sys.argv[1:]:
        if arg.startswith("--check-vectors="):
            return check_vectors(arg.split("=", 1)[1])
        if arg.startswith("--hostile="):
            hostile = arg.split("=", 1)[1]
            if hostile not in ("oversized", "unknown-kind", "bad-utf8"):
                sys.exit("child.py: unknown --hostile mode %r" % hostile)
        else:
            sys.exit("child.py: unknown argument %r" % arg)
    try:
        sock = take_channel()
    except ChannelError as e:
        print("child.py: %s" % e, file=sys.stderr)
        return 2
    ch = Channel(sock)
    try:
        return run(ch, hostile)
    except ProtocolError as e:
        print("child.py: protocol error: %s" % e, file=sys.stderr)
        ch.goodbye(e.reason, str(e))
        return 3
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main())
