package main

// A minimal client-side WebSocket codec (RFC 6455) on a raw net.Conn: just what a load
// generator needs. Client frames are masked; server frames are expected unmasked. Messages may
// arrive fragmented; pings are answered, pongs skipped, a close ends the read.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

const (
	opCont   = 0x0
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xA
)

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

var errClosed = errors.New("websocket: close frame received")

// dialConfig describes how to reach the target.
type dialConfig struct {
	URL        *url.URL
	TLS        *tls.Config // non-nil for wss://
	Timeout    time.Duration
	LocalAddrs []net.IP // source addresses to rotate over (nil = kernel's choice)
}

// target returns host:port with the scheme's default port filled in.
func (d *dialConfig) target() string {
	h := d.URL.Host
	if d.URL.Port() == "" {
		if d.URL.Scheme == "wss" {
			h = net.JoinHostPort(d.URL.Hostname(), "443")
		} else {
			h = net.JoinHostPort(d.URL.Hostname(), "80")
		}
	}
	return h
}

// checkLoopback refuses any target that is not on 127.0.0.0/8 or ::1: this tool is for local
// benchmarking only.
func checkLoopback(u *url.URL) error {
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("target %q is not a loopback address (127.0.0.0/8, ::1, localhost)", host)
	}
	return nil
}

// maxHeader is a frame header's largest size: 2 bytes, an 8-byte length, a 4-byte mask key.
const maxHeader = 14

// conn is one client WebSocket connection.
type conn struct {
	nc net.Conn
	br *bufio.Reader

	wmu  sync.Mutex // serialises writes (data writer vs pong replies)
	wbuf []byte     // frames being batched for one Write

	// Writes that never block (plain TCP, see offer). All under wmu.
	nonblocking bool            // set before the connection's reader starts
	tw          *tryWriter      // writes that do not wait for room in the socket
	flushers    *sync.WaitGroup // counts the flusher goroutines of nonblocking connections
	backlog     []byte          // bytes behind a write the socket did not take whole
	spare       []byte          // the flusher's other buffer
	flushing    bool            // a flusher owns the socket's writes until backlog is empty
	werr        error           // the first write error of offer or writeWith

	// split, when not 0, is the length of every data frame this connection sends (they all
	// carry one message size): a batch is then written one frame per Write, so over TLS each
	// message is a record of its own, as browsers send them.
	split int

	rbuf []byte          // reassembly buffer for fragmented messages
	hdr  [maxHeader]byte // readMessage's frame header (reader-owned, here so it is not allocated per frame)
	cb   [125]byte       // readMessage's control frame payload (reader-owned)
	mask uint64          // xorshift state for mask keys

	inbox chan idleMsg // idle mode: what readIdle read
}

// dial opens TCP (and TLS) to the target from localIP (nil = any) and performs the upgrade.
func dial(dc *dialConfig, localIP net.IP) (*conn, error) {
	d := net.Dialer{Timeout: dc.Timeout}
	if localIP != nil {
		d.LocalAddr = &net.TCPAddr{IP: localIP}
		d.Control = bindNoPort
	}
	nc, err := d.Dial("tcp", dc.target())
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	if dc.Timeout > 0 {
		_ = nc.SetDeadline(time.Now().Add(dc.Timeout))
	}
	if dc.TLS != nil {
		tc := tls.Client(nc, dc.TLS)
		if err := tc.Handshake(); err != nil {
			nc.Close()
			return nil, fmt.Errorf("tls handshake: %w", err)
		}
		nc = tc
	}
	c := &conn{nc: nc, br: bufio.NewReaderSize(nc, 16<<10)}
	var seed [8]byte
	_, _ = rand.Read(seed[:])
	c.mask = binary.LittleEndian.Uint64(seed[:]) | 1
	if err := c.upgrade(dc.URL); err != nil {
		nc.Close()
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	return c, nil
}

func (c *conn) upgrade(u *url.URL) error {
	var k [16]byte
	_, _ = rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	path := u.RequestURI()
	if path == "" {
		path = "/"
	}
	req := "GET " + path + " HTTP/1.1\r\nHost: " + u.Host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
		"\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(c.nc, req); err != nil {
		return fmt.Errorf("write upgrade request: %w", err)
	}
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return fmt.Errorf("read upgrade response: %w", err)
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 101")) {
		status := strings.TrimSpace(string(line))
		// Show the start of the body too: refusals usually say why.
		_ = c.nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		rest, _ := io.ReadAll(io.LimitReader(c.br, 2048))
		if _, body, ok := bytes.Cut(rest, []byte("\r\n\r\n")); ok && len(body) > 0 {
			if len(body) > 120 {
				body = body[:120]
			}
			return fmt.Errorf("upgrade refused: %q: %q", status, strings.TrimSpace(string(body)))
		}
		return fmt.Errorf("upgrade refused: %q", status)
	}
	h := sha1.Sum([]byte(key + wsGUID))
	want := base64.StdEncoding.EncodeToString(h[:])
	gotAccept := false
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("read upgrade headers: %w", err)
		}
		s := strings.TrimRight(string(line), "\r\n")
		if s == "" {
			break
		}
		name, val, ok := strings.Cut(s, ":")
		if ok && strings.EqualFold(strings.TrimSpace(name), "Sec-WebSocket-Accept") {
			if strings.TrimSpace(val) != want {
				return fmt.Errorf("bad Sec-WebSocket-Accept %q", strings.TrimSpace(val))
			}
			gotAccept = true
		}
	}
	if !gotAccept {
		return errors.New("upgrade response lacks Sec-WebSocket-Accept")
	}
	return nil
}

func (c *conn) nextMask() uint32 {
	x := c.mask
	x ^= x << 13
	x ^= x >> 7
	x ^= x << 17
	c.mask = x
	return uint32(x)
}

// appendFrame appends one masked, final frame to b. Must be called with wmu held.
func (c *conn) appendFrame(b []byte, op byte, payload []byte) []byte {
	n := len(payload)
	b = append(b, 0x80|op)
	switch {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xFFFF:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	m := c.nextMask()
	b = binary.BigEndian.AppendUint32(b, m)
	start := len(b)
	b = append(b, payload...)
	maskBytes(b[start:], m)
	return b
}

// maskBytes XORs p in place with the 4-byte key k (big-endian order as on the wire), with
// github.com/gobwas/ws's AVX2 routine (the echo backend's): about four times as fast as an
// 8-byte Go loop on 64 KiB payloads (BenchmarkAppendFrame), where masking is the largest part
// of the generator's own work.
func maskBytes(p []byte, k uint32) {
	ws.Cipher(p, [4]byte{byte(k >> 24), byte(k >> 16), byte(k >> 8), byte(k)}, 0)
}

// writeFrame writes one frame immediately (see writeWith).
func (c *conn) writeFrame(op byte, payload []byte) error {
	return c.writeWith(func(b []byte) []byte { return c.appendFrame(b, op, payload) })
}

// writeWith writes the frames that build appends to the buffer it is given (with wmu held) in
// one write: offered on a nonblocking connection (offerWith), a blocking write otherwise. Either
// way the first write error is kept as the connection's (werr), and later writes return it.
func (c *conn) writeWith(build func(b []byte) []byte) error {
	if c.nonblocking {
		return c.offerWith(build)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	c.wbuf = build(c.wbuf[:0])
	err := c.writeFrames(c.wbuf)
	if err != nil {
		c.werr = err
	}
	return err
}

// writeFrames writes b, a batch of whole data frames, with blocking writes: in one Write, or
// with split set one Write per frame. Called with wmu held.
func (c *conn) writeFrames(b []byte) error {
	if c.split == 0 {
		_, err := c.nc.Write(b)
		return err
	}
	for len(b) > 0 {
		n := min(c.split, len(b))
		if _, err := c.nc.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// frameSize is the length of a masked data frame carrying n payload bytes, as appendFrame
// builds it.
func frameSize(n int) int {
	switch {
	case n < 126:
		return 2 + 4 + n
	case n <= 0xFFFF:
		return 4 + 4 + n
	}
	return 10 + 4 + n
}

// setNonblocking makes the connection's writes go through offer, with flushers counting its
// flusher goroutines. It changes nothing where writes cannot be tried without blocking: over
// TLS, or on a platform without a tryWriter.
func (c *conn) setNonblocking(flushers *sync.WaitGroup) {
	if tw := newTryWriter(c.nc); tw != nil {
		c.nonblocking, c.tw, c.flushers = true, tw, flushers
	}
}

// offer writes one frame without ever blocking the caller. What the socket does not take at
// once is queued, with every later frame, and written by a flusher goroutine of the
// connection's own until the queue is empty: a connection whose target stops reading holds
// up no other connection sharing the caller's goroutine, and its frames stay in order.
func (c *conn) offer(op byte, payload []byte) error {
	return c.offerWith(func(b []byte) []byte { return c.appendFrame(b, op, payload) })
}

// offerWith is offer for the frames that build appends to the buffer it is given (with wmu
// held), so that several frames leave in one write.
func (c *conn) offerWith(build func(b []byte) []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	if c.flushing {
		c.backlog = build(c.backlog)
		return nil
	}
	c.wbuf = build(c.wbuf[:0])
	n, err := c.tw.write(c.wbuf)
	if err != nil {
		c.werr = err
		return err
	}
	if n < len(c.wbuf) {
		c.backlog = append(c.backlog[:0], c.wbuf[n:]...)
		c.flushing = true
		c.flushers.Add(1)
		go c.flush()
	}
	return nil
}

// flush writes the backlog, blocking, until it is empty or a write fails. A write deadline
// (the end of the run) ends it too; what was never written then counts as lost.
func (c *conn) flush() {
	defer c.flushers.Done()
	for {
		c.wmu.Lock()
		if len(c.backlog) == 0 {
			c.flushing = false
			c.wmu.Unlock()
			return
		}
		out := c.backlog
		c.backlog, c.spare = c.spare[:0], nil
		c.wmu.Unlock()
		_, err := c.nc.Write(out)
		c.wmu.Lock()
		c.spare = out[:0]
		if err != nil {
			c.werr = err // later offers fail with it; writeErr does not report a timeout
			c.flushing = false
			c.backlog = c.backlog[:0]
			c.wmu.Unlock()
			return
		}
		c.wmu.Unlock()
	}
}

// writeErr is the write error kept by offer or writeWith, if any; a timeout (the end of the run)
// is not one.
func (c *conn) writeErr() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil && isTimeout(c.werr) {
		return nil
	}
	return c.werr
}

// readMessage reads the next data message (reassembling fragments) and returns its opcode and
// payload; the payload aliases an internal buffer valid until the next call. Pings are answered,
// pongs ignored. A close frame yields errClosed.
func (c *conn) readMessage() (byte, []byte, error) {
	hdr := &c.hdr
	msgOp := byte(0)
	c.rbuf = c.rbuf[:0]
	for {
		if _, err := io.ReadFull(c.br, hdr[:2]); err != nil {
			return 0, nil, err
		}
		fin := hdr[0]&0x80 != 0
		op := hdr[0] & 0x0F
		masked := hdr[1]&0x80 != 0
		n := uint64(hdr[1] & 0x7F)
		switch n {
		case 126:
			if _, err := io.ReadFull(c.br, hdr[2:4]); err != nil {
				return 0, nil, err
			}
			n = uint64(binary.BigEndian.Uint16(hdr[2:4]))
		case 127:
			if _, err := io.ReadFull(c.br, hdr[2:10]); err != nil {
				return 0, nil, err
			}
			n = binary.BigEndian.Uint64(hdr[2:10])
		}
		var mk uint32
		if masked { // servers must not mask, but tolerate it
			if _, err := io.ReadFull(c.br, hdr[10:14]); err != nil {
				return 0, nil, err
			}
			mk = binary.BigEndian.Uint32(hdr[10:14])
		}
		if n > 64<<20 {
			return 0, nil, fmt.Errorf("frame of %d bytes is too large", n)
		}
		if op >= opClose { // control frame, possibly between fragments
			cb := &c.cb
			if n > 125 {
				return 0, nil, errors.New("control frame too long")
			}
			if _, err := io.ReadFull(c.br, cb[:n]); err != nil {
				return 0, nil, err
			}
			if masked {
				maskBytes(cb[:n], mk)
			}
			switch op {
			case opPing:
				if err := c.writeFrame(opPong, cb[:n]); err != nil {
					return 0, nil, err
				}
			case opClose:
				return opClose, nil, errClosed
			}
			continue
		}
		payload, err := c.readPayload(int(n))
		if err != nil {
			return 0, nil, err
		}
		if masked {
			maskBytes(payload, mk)
		}
		if op != opCont {
			msgOp = op
		}
		if fin {
			return msgOp, c.rbuf, nil
		}
	}
}

// readPayload reads n bytes onto the end of c.rbuf and returns them. The buffer grows as the
// bytes arrive (at most doubling, by 64 KiB at least), so a length that the peer never sends
// costs no memory ahead of its data.
func (c *conn) readPayload(n int) ([]byte, error) {
	start := len(c.rbuf)
	need := start + n
	for len(c.rbuf) < need {
		if len(c.rbuf) == cap(c.rbuf) {
			c.rbuf = slices.Grow(c.rbuf, min(need-len(c.rbuf), max(cap(c.rbuf), 64<<10)))
		}
		m, err := c.br.Read(c.rbuf[len(c.rbuf):min(cap(c.rbuf), need)])
		c.rbuf = c.rbuf[:len(c.rbuf)+m]
		if err != nil {
			if err == io.EOF && len(c.rbuf) > start {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return c.rbuf[start:], nil
}

// closeGracefully sends a close frame, waits (bounded) for the peer's close or EOF, then closes.
func (c *conn) closeGracefully(wait time.Duration) {
	_ = c.nc.SetDeadline(time.Now().Add(wait))
	if err := c.writeFrame(opClose, []byte{0x03, 0xE8}); err == nil {
		for {
			if _, _, err := c.readMessage(); err != nil {
				break
			}
		}
	}
	c.nc.Close()
}
