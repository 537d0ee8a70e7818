// Command peer is a readyfd native-protocol child, written from
// proto/PROTOCOL.md alone, with Go's standard library only.
//
// It takes the channel (section 1), binds a TCP listener on 127.0.0.1:0,
// sends Hello and Ready (section 4), reads the parent's Hello, sends a
// Status and a Notify of its own, then serves:
//
//   - Ping: answered Ok (section 5 rule 9);
//   - Request App: the body is a bincode String (section 3: u64 length,
//     then UTF-8); the answer is a Response App whose body is that string
//     upper-cased, or Response Error BadRequest when it is not a String;
//   - Shutdown: answered Ok, then Goodbye(ShuttingDown), close, exit 0;
//   - Notify: one-way, ignored; Goodbye or end of stream: close, exit 0.
//
// Every connection to the listener gets one line, "go peer\n".
//
// Any breach of sections 2-5 by the parent ends the session: Goodbye with
// ProtocolError (VersionMismatch for a version mismatch), a line on stderr,
// exit 3. A missing or invalid channel is exit 2.
//
// -hostile=MODE breaks the protocol on purpose after Ready, once the
// parent's Hello has been read, then waits for the parent's Goodbye (exit 0
// if its reason is ProtocolError, 5 for another reason, 4 if the stream
// ends without one): oversized (a Notify one byte longer than the parent's max_frame),
// unknown-kind (an empty frame of kind 0x2a), bad-utf8 (a Status whose
// string is not UTF-8).
//
// -check-vectors=PATH decodes the frames of proto/vectors.json as the
// channel would (see checkVectors) and exits, 0 if every one agreed.
package main

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"
)

const (
	version         = 1
	roleParent      = 0
	roleChild       = 1
	defaultMaxFrame = 16 * 1024 * 1024
	minMaxFrame     = 4096
	ourMaxFrame     = defaultMaxFrame

	kHello    = 1
	kReady    = 2
	kRequest  = 3
	kResponse = 4
	kNotify   = 5
	kStatus   = 6
	kGoodbye  = 7

	reqPing     = 0
	reqShutdown = 1
	reqApp      = 2

	respOk    = 0
	respApp   = 1
	respError = 2

	errBadRequest = 1

	byeShuttingDown    = 1
	byeProtocolError   = 2
	byeVersionMismatch = 3
)

var kindNames = map[byte]string{1: "Hello", 2: "Ready", 3: "Request", 4: "Response",
	5: "Notify", 6: "Status", 7: "Goodbye"}

// protocolError is a breach of sections 2-5 by the parent; reason is the
// Goodbye reason to answer it with.
type protocolError struct {
	msg    string
	reason uint32
}

func (e *protocolError) Error() string { return e.msg }

func perr(format string, args ...interface{}) error {
	return &protocolError{fmt.Sprintf(format, args...), byeProtocolError}
}

// ---- section 1: taking the channel ----

func fcntlGetfd(fd int) (int, error) {
	r, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFD, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func isDecimal(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func takeChannel() (*os.File, error) {
	raw, ok := os.LookupEnv("READYFD")
	if !ok {
		return nil, errors.New("READYFD is not set: not started by a readyfd parent")
	}
	fd, err := strconv.Atoi(raw)
	if !isDecimal(raw) || err != nil || fd > 1<<31-1 {
		return nil, fmt.Errorf("READYFD=%q is not a decimal descriptor number", raw)
	}
	identity, haveIdentity := os.LookupEnv("READYFD_INODE")
	var wantDev, wantIno uint64
	if haveIdentity {
		parts := strings.Split(identity, ":")
		if len(parts) != 2 || !isDecimal(parts[0]) || !isDecimal(parts[1]) {
			return nil, fmt.Errorf("READYFD_INODE=%q is not <dev>:<ino>", identity)
		}
		var e1, e2 error
		wantDev, e1 = strconv.ParseUint(parts[0], 10, 64)
		wantIno, e2 = strconv.ParseUint(parts[1], 10, 64)
		if e1 != nil || e2 != nil {
			return nil, fmt.Errorf("READYFD_INODE=%q is not <dev>:<ino>", identity)
		}
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("READYFD=%d is not an open descriptor: %v", fd, err)
	}
	if haveIdentity && (uint64(st.Dev) != wantDev || uint64(st.Ino) != wantIno) {
		// Not the parent's descriptor: leave it alone.
		return nil, fmt.Errorf("READYFD=%d: inherited the variables without the descriptor "+
			"(identity %d:%d, READYFD_INODE=%s)", fd, st.Dev, st.Ino, identity)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFSOCK {
		return nil, fmt.Errorf("READYFD=%d is not a socket", fd)
	}
	flags, err := fcntlGetfd(fd)
	if err != nil {
		return nil, fmt.Errorf("READYFD=%d: fcntl: %v", fd, err)
	}
	if flags&syscall.FD_CLOEXEC != 0 {
		// exec closed every close-on-exec descriptor: this one was taken
		// before in this process, or opened since at that number.
		return nil, fmt.Errorf("READYFD=%d: already taken", fd)
	}
	typ, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE)
	if err != nil || typ != syscall.SOCK_STREAM {
		return nil, fmt.Errorf("READYFD=%d is not a SOCK_STREAM socket (type %d, %v)", fd, typ, err)
	}
	sa, err := syscall.Getsockname(fd)
	if _, unix := sa.(*syscall.SockaddrUnix); err != nil || !unix {
		return nil, fmt.Errorf("READYFD=%d is not an AF_UNIX socket (%T, %v)", fd, sa, err)
	}
	syscall.CloseOnExec(fd) // at once, so programs we run do not inherit it
	return os.NewFile(uintptr(fd), "readyfd"), nil
}

// ---- section 3: field encoding ----

type encoder struct{ bytes.Buffer }

func (e *encoder) u8(v uint8)   { e.WriteByte(v) }
func (e *encoder) u16(v uint16) { binary.Write(&e.Buffer, binary.LittleEndian, v) }
func (e *encoder) u32(v uint32) { binary.Write(&e.Buffer, binary.LittleEndian, v) }
func (e *encoder) u64(v uint64) { binary.Write(&e.Buffer, binary.LittleEndian, v) }
func (e *encoder) str(s string) { e.u64(uint64(len(s))); e.WriteString(s) }

// decoder reads one payload exactly; every length is checked against the
// bytes left.
type decoder struct {
	what string
	buf  []byte
}

func (d *decoder) take(n uint64) ([]byte, error) {
	if n > uint64(len(d.buf)) {
		return nil, perr("%s: unexpected end: needs %d more bytes, %d left", d.what, n, len(d.buf))
	}
	b := d.buf[:n]
	d.buf = d.buf[n:]
	return b, nil
}

func (d *decoder) u8() (uint8, error) {
	b, err := d.take(1)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

func (d *decoder) u32() (uint32, error) {
	b, err := d.take(4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (d *decoder) u64() (uint64, error) {
	b, err := d.take(8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

func (d *decoder) str() (string, error) {
	n, err := d.u64()
	if err != nil {
		return "", err
	}
	if n > uint64(len(d.buf)) { // never trusted for allocation
		return "", perr("%s: a string claims %d bytes, %d left", d.what, n, len(d.buf))
	}
	b, _ := d.take(n)
	if !utf8.Valid(b) {
		return "", perr("%s: invalid utf-8", d.what)
	}
	return string(b), nil
}

func (d *decoder) finish() error {
	if len(d.buf) != 0 {
		return perr("%s: %d trailing bytes", d.what, len(d.buf))
	}
	return nil
}

// ---- section 2: frames ----

type channel struct {
	f       *os.File
	ourMax  uint32 // announced in our Hello
	peerMax uint32 // the default until the parent's Hello is read
	saidBye bool
}

func (c *channel) send(kind byte, payload []byte) error {
	if uint64(len(payload)) > uint64(c.peerMax) {
		return fmt.Errorf("a %s of %d bytes does not fit the parent's maximum %d",
			kindNames[kind], len(payload), c.peerMax)
	}
	return c.sendUnchecked(kind, payload)
}

func (c *channel) sendUnchecked(kind byte, payload []byte) error {
	frame := make([]byte, 5, 5+len(payload))
	binary.LittleEndian.PutUint32(frame, uint32(len(payload)))
	frame[4] = kind
	_, err := c.f.Write(append(frame, payload...)) // os.File.Write writes it all
	return err
}

func (c *channel) goodbye(reason uint32, msg string) {
	if c.saidBye {
		return
	}
	c.saidBye = true
	if len(msg) > 4096 {
		msg = strings.ToValidUTF8(msg[:4096], "")
	}
	var e encoder
	e.u32(reason)
	e.str(msg)
	c.send(kGoodbye, e.Bytes()) // the parent may be gone already
}

// readFull reads len(buf) bytes, or fewer if the stream ended (ECONNRESET
// is end of stream, section 1).
func (c *channel) readFull(buf []byte) (int, error) {
	have := 0
	for have < len(buf) {
		n, err := c.f.Read(buf[have:])
		have += n
		if err == io.EOF || errors.Is(err, syscall.ECONNRESET) {
			return have, nil
		}
		if err != nil {
			return have, err
		}
	}
	return have, nil
}

// readFrame returns a frame, or ok == false at end of stream between frames.
func (c *channel) readFrame() (kind byte, payload []byte, ok bool, err error) {
	var head [5]byte
	n, err := c.readFull(head[:])
	if err != nil {
		return 0, nil, false, err
	}
	if n == 0 {
		return 0, nil, false, nil
	}
	if n < 5 {
		return 0, nil, false, perr("truncated: the stream ended after %d of 5 header bytes", n)
	}
	length := binary.LittleEndian.Uint32(head[:4])
	kind = head[4]
	// The length is checked on the header alone, before reading the payload.
	if length > c.ourMax {
		return 0, nil, false, perr("too large: a frame of %d bytes, our maximum is %d", length, c.ourMax)
	}
	name, known := kindNames[kind]
	if !known {
		// 0x82-0x85 carry descriptors (section 2.1); this peer reads with
		// plain read, so the kernel discarded them, and section 8 says a
		// peer without fd support fails the session here.
		return 0, nil, false, perr("unknown kind 0x%02x", kind)
	}
	payload = make([]byte, length)
	n, err = c.readFull(payload)
	if err != nil {
		return 0, nil, false, err
	}
	if uint32(n) < length {
		return 0, nil, false, perr("truncated: the stream ended after %d of %d bytes of a %s", 5+n, 5+length, name)
	}
	if length == 0 && kind != kNotify {
		return 0, nil, false, perr("an empty %s payload", name)
	}
	return kind, payload, true, nil
}

// ---- sections 4 and 5: messages and the session ----

// decodeHello decodes a Hello in the order of section 5 rule 3 and returns
// its role and max_frame.
func decodeHello(p []byte) (uint32, uint32, error) {
	if len(p) >= 4 && string(p[:4]) != "RDFD" {
		return 0, 0, perr("bad magic %x: the parent does not speak readyfd", p[:4])
	}
	if len(p) >= 6 {
		if v := binary.LittleEndian.Uint16(p[4:6]); v != version {
			return 0, 0, &protocolError{fmt.Sprintf("version mismatch: ours %d, theirs %d", version, v), byeVersionMismatch}
		}
	}
	d := decoder{"Hello", p}
	if _, err := d.take(6); err != nil {
		return 0, 0, err
	}
	if _, err := d.u32(); err != nil { // pid
		return 0, 0, err
	}
	role, err := d.u32()
	if err != nil {
		return 0, 0, err
	}
	if role != roleParent && role != roleChild {
		return 0, 0, perr("Hello: invalid role tag %d", role)
	}
	max, err := d.u32()
	if err != nil {
		return 0, 0, err
	}
	return role, max, d.finish()
}

// checkHello decodes the parent's Hello, then makes the session's checks
// (section 5 rule 3), and returns its max_frame.
func checkHello(p []byte) (uint32, error) {
	role, max, err := decodeHello(p)
	if err != nil {
		return 0, err
	}
	if role == roleChild {
		return 0, perr("role conflict: the peer is a child too")
	}
	if max < minMaxFrame {
		return 0, perr("max_frame too small: %d announced, at least %d", max, minMaxFrame)
	}
	return max, nil
}

type request struct {
	id    uint64
	tag   uint32
	body  []byte
	grace *uint64
}

// decodeMessage decodes and checks a message of kind; a Request comes back.
func decodeMessage(kind byte, p []byte) (*request, error) {
	d := decoder{kindNames[kind], p}
	switch kind {
	case kHello:
		_, _, err := decodeHello(p)
		return nil, err
	case kRequest:
		id, err := d.u64()
		if err != nil {
			return nil, err
		}
		tag, err := d.u32()
		if err != nil {
			return nil, err
		}
		r := &request{id: id, tag: tag}
		switch tag {
		case reqPing:
		case reqShutdown:
			opt, err := d.u8()
			if err != nil {
				return nil, err
			}
			if opt == 1 {
				g, err := d.u64()
				if err != nil {
					return nil, err
				}
				r.grace = &g
			} else if opt != 0 {
				return nil, perr("Request: invalid Option tag %d", opt)
			}
		case reqApp:
			r.body, _ = d.take(uint64(len(d.buf)))
		default:
			return nil, perr("Request: invalid tag %d", tag)
		}
		return r, d.finish()
	case kResponse:
		if _, err := d.u64(); err != nil {
			return nil, err
		}
		tag, err := d.u32()
		if err != nil {
			return nil, err
		}
		switch tag {
		case respOk:
		case respApp:
			d.take(uint64(len(d.buf)))
		case respError:
			k, err := d.u32()
			if err != nil {
				return nil, err
			}
			if k > 4 {
				return nil, perr("Response: invalid error kind %d", k)
			}
			if _, err := d.str(); err != nil {
				return nil, err
			}
		default:
			return nil, perr("Response: invalid tag %d", tag)
		}
		return nil, d.finish()
	case kNotify:
		return nil, nil
	case kStatus:
		if _, err := d.str(); err != nil {
			return nil, err
		}
		return nil, d.finish()
	case kGoodbye:
		reason, err := d.u32()
		if err != nil {
			return nil, err
		}
		if reason > 3 {
			return nil, perr("Goodbye: invalid reason %d", reason)
		}
		if _, err := d.str(); err != nil {
			return nil, err
		}
		return nil, d.finish()
	case kReady:
		if _, err := d.u32(); err != nil {
			return nil, err
		}
		count, err := d.u64()
		if err != nil {
			return nil, err
		}
		for i := uint64(0); i < count; i++ { // each endpoint costs its bytes
			if _, err := d.str(); err != nil {
				return nil, err
			}
			variant, err := d.u32()
			if err != nil {
				return nil, err
			}
			switch variant {
			case 0, 1:
				family, err := d.u32()
				if err != nil {
					return nil, err
				}
				if family > 1 {
					return nil, perr("Ready: invalid SocketAddr tag %d", family)
				}
				if _, err := d.take(map[uint32]uint64{0: 4 + 2, 1: 16 + 2}[family]); err != nil {
					return nil, err
				}
			case 2, 3:
				if _, err := d.str(); err != nil {
					return nil, err
				}
			default:
				return nil, perr("Ready: invalid Address tag %d", variant)
			}
		}
		opt, err := d.u8()
		if err != nil {
			return nil, err
		}
		if opt == 1 {
			if _, err := d.str(); err != nil {
				return nil, err
			}
		} else if opt != 0 {
			return nil, perr("Ready: invalid Option tag %d", opt)
		}
		return nil, d.finish()
	}
	panic(kind)
}

// upperReply is the App handler: a bincode String in, upper-cased out.
func upperReply(body []byte) ([]byte, error) {
	d := decoder{"request body", body}
	s, err := d.str()
	if err != nil {
		return nil, err
	}
	if err := d.finish(); err != nil {
		return nil, err
	}
	var e encoder
	e.str(strings.ToUpper(s))
	return e.Bytes(), nil
}

func serveListener(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		conn.Write([]byte("go peer\n"))
		conn.Close()
	}
}

func run(c *channel, hostile string) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go serveListener(ln)
	addr := ln.Addr().(*net.TCPAddr)
	pid := uint32(os.Getpid())

	var hello encoder
	hello.WriteString("RDFD")
	hello.u16(version)
	hello.u32(pid)
	hello.u32(roleChild)
	hello.u32(ourMaxFrame)
	var ready encoder
	ready.u32(pid)
	ready.u64(1) // one endpoint
	ready.str("http")
	ready.u32(0) // Tcp
	ready.u32(0) // IPv4
	ready.Write(addr.IP.To4())
	ready.u16(uint16(addr.Port))
	ready.u8(1) // Some(status)
	ready.str("listening")
	// Hello first, without waiting; Ready right behind it (section 5 rule 1).
	if err := c.send(kHello, hello.Bytes()); err != nil {
		return err
	}
	if err := c.send(kReady, ready.Bytes()); err != nil {
		return err
	}

	kind, payload, ok, err := c.readFrame()
	if err != nil || !ok {
		return err // !ok: the parent closed without a word
	}
	if kind != kHello {
		if _, err := decodeMessage(kind, payload); err != nil {
			return err // a malformed frame gives its own error
		}
		return perr("expected Hello first, got %s", kindNames[kind])
	}
	max, err := checkHello(payload)
	if err != nil {
		return err // peerMax stays the default: the Goodbye must still fit
	}
	c.peerMax = max

	if hostile != "" {
		switch hostile {
		case "oversized":
			c.sendUnchecked(kNotify, make([]byte, int(c.peerMax)+1))
		case "unknown-kind":
			c.f.Write([]byte{0, 0, 0, 0, 0x2a})
		case "bad-utf8":
			c.send(kStatus, []byte{2, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe})
		}
		// Write errors are expected: the parent may close before it has
		// read the whole frame. The parent must refuse that with
		// Goodbye(ProtocolError), which ends the session (section 5 rule
		// 11: finish and close). Exit 0 if so, 4 if the stream ended
		// without it, 5 for another Goodbye.
		for {
			kind, payload, ok, err := c.readFrame()
			if err != nil {
				return err
			}
			if !ok {
				os.Exit(4)
			}
			if kind == kGoodbye {
				if _, err := decodeMessage(kind, payload); err != nil {
					return err
				}
				if binary.LittleEndian.Uint32(payload) != byeProtocolError {
					os.Exit(5)
				}
				return nil
			}
		}
	}

	var status, note encoder
	status.str("serving from go")
	note.str("hello from go")
	if err := c.send(kStatus, status.Bytes()); err != nil {
		return err
	}
	if err := c.send(kNotify, note.Bytes()); err != nil {
		return err
	}

	for {
		kind, payload, ok, err := c.readFrame()
		if err != nil || !ok {
			return err // !ok: end of stream at a frame boundary
		}
		req, err := decodeMessage(kind, payload)
		if err != nil {
			return err
		}
		switch kind {
		case kHello:
			return perr("duplicate Hello")
		case kReady, kStatus:
			return perr("wrong direction: a parent sent %s", kindNames[kind])
		case kResponse:
			return perr("unknown response id: we sent no request")
		case kNotify:
			continue
		case kGoodbye:
			return nil // the parent is done: finish and close
		}
		var answer encoder
		answer.u64(req.id)
		switch req.tag {
		case reqPing:
			answer.u32(respOk)
		case reqShutdown:
			answer.u32(respOk)
			if err := c.send(kResponse, answer.Bytes()); err != nil {
				return err
			}
			c.goodbye(byeShuttingDown, "shutdown requested")
			return nil
		default:
			if up, err := upperReply(req.body); err == nil {
				answer.u32(respApp)
				answer.Write(up)
			} else {
				answer.u32(respError)
				answer.u32(errBadRequest)
				answer.str("the body is not a String: " + err.Error())
			}
		}
		if err := c.send(kResponse, answer.Bytes()); err != nil {
			return err
		}
	}
}

// ---- checking this peer against proto/vectors.json ----

// errorClass is the section 7 class of one of our errors (the messages
// above).
func errorClass(err error) string {
	m := err.Error()
	for _, nc := range [][2]string{{"too large", "TooLarge"}, {"truncated:", "Truncated"},
		{"unknown kind", "UnknownKind"}, {"invalid utf-8", "InvalidUtf8"},
		{"trailing bytes", "TrailingBytes"}, {"bad magic", "BadMagic"},
		{"version mismatch", "VersionMismatch"}, {"invalid", "InvalidTag"},
		{"unexpected end", "UnexpectedEnd"}, {"claims", "UnexpectedEnd"},
		{"an empty", "UnexpectedEnd"}} {
		if strings.Contains(m, nc[0]) {
			return nc[1]
		}
	}
	return "?"
}

// decodeStream reads stream (then end of stream) as this peer reads its
// channel, decoding every frame: the number of frames, or the error.
func decodeStream(stream []byte, ourMax uint32) (int, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	a, b := os.NewFile(uintptr(fds[0]), "a"), os.NewFile(uintptr(fds[1]), "b")
	defer b.Close()
	_, err = a.Write(stream)
	a.Close()
	if err != nil {
		return 0, err
	}
	c := &channel{f: b, ourMax: ourMax, peerMax: defaultMaxFrame}
	for n := 0; ; n++ {
		kind, payload, ok, err := c.readFrame()
		if err != nil || !ok {
			return n, err
		}
		if _, err := decodeMessage(kind, payload); err != nil {
			return n, err
		}
	}
}

// checkVectors decodes each frame of proto/vectors.json that a peer
// receives: the valid ones decode, the invalid ones fail with their class
// (or the other of UnexpectedEnd and LimitExceeded, whose choice section 7
// calls an artefact of the reference decoder). Frames with file
// descriptors are UnknownKind here: this peer does not support them
// (section 8).
func checkVectors(path string) int {
	type vector struct {
		Name     string
		Frame    string
		Stream   string
		MaxFrame uint32 `json:"max_frame"`
		Error    json.RawMessage
	}
	var all map[string]json.RawMessage
	raw, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(raw, &all)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "go peer: %s: %v\n", path, err)
		return 2
	}
	part := func(name string) []vector {
		var vs []vector
		if err := json.Unmarshal(all[name], &vs); err != nil {
			fmt.Fprintf(os.Stderr, "go peer: %s: %s: %v\n", path, name, err)
			os.Exit(2)
		}
		return vs
	}
	checked, failed := 0, 0
	expect := func(name, stream string, ourMax uint32, want string) {
		checked++
		data, err := hex.DecodeString(stream)
		if err != nil {
			fmt.Fprintf(os.Stderr, "vector %s: bad hex: %v\n", name, err)
			failed++
			return
		}
		n, err := decodeStream(data, ourMax)
		got, class := fmt.Sprintf("ok, %d frame(s)", n), ""
		if err != nil {
			class = errorClass(err)
			got = fmt.Sprintf("%s (%v)", class, err)
		}
		if want == "LimitExceeded" {
			want = "UnexpectedEnd"
		}
		if class != want {
			if want == "" {
				want = "ok"
			}
			fmt.Fprintf(os.Stderr, "vector %s: want %s, got %s\n", name, want, got)
			failed++
		}
	}
	for _, v := range part("valid") {
		expect(v.Name, v.Frame, defaultMaxFrame, "")
	}
	for _, v := range part("decode_only") {
		expect(v.Name, v.Frame, defaultMaxFrame, "VersionMismatch")
	}
	for _, v := range part("invalid") {
		var e struct{ Error string }
		json.Unmarshal(v.Error, &e)
		expect(v.Name, v.Stream, v.MaxFrame, e.Error)
	}
	for _, v := range append(part("fd_valid"), part("fd_invalid")...) {
		expect(v.Name, v.Frame, defaultMaxFrame, "UnknownKind")
	}
	fmt.Printf("%d vectors checked, %d failed\n", checked, failed)
	if failed > 0 {
		return 1
	}
	return 0
}

func main() {
	hostile := flag.String("hostile", "", "oversized, unknown-kind or bad-utf8: break the protocol after Ready")
	vectors := flag.String("check-vectors", "", "check this peer's decoding against proto/vectors.json, then exit")
	flag.Parse()
	if *vectors != "" {
		os.Exit(checkVectors(*vectors))
	}
	switch *hostile {
	case "", "oversized", "unknown-kind", "bad-utf8":
	default:
		fmt.Fprintf(os.Stderr, "go peer: unknown -hostile mode %q\n", *hostile)
		os.Exit(2)
	}
	f, err := takeChannel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go peer: %v\n", err)
		os.Exit(2)
	}
	c := &channel{f: f, ourMax: ourMaxFrame, peerMax: defaultMaxFrame}
	err = run(c, *hostile)
	code := 0
	var pe *protocolError
	if errors.As(err, &pe) {
		fmt.Fprintf(os.Stderr, "go peer: protocol error: %v\n", pe)
		c.goodbye(pe.reason, pe.msg)
		code = 3
	} else if err != nil {
		fmt.Fprintf(os.Stderr, "go peer: %v\n", err)
		code = 1
	}
	f.Close()
	os.Exit(code)
}
