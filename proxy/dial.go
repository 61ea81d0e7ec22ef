package proxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/wsgate/wsgate/internal/httphdr"
	"github.com/wsgate/wsgate/wsframe"
)

// BackendRequest describes the gateway's own opening handshake with a backend.
type BackendRequest struct {
	// URL is the final ws:// URL: host, port, path and query after any rewrite.
	URL *url.URL
	// Header holds the headers to forward (subprotocol offer, X-Forwarded-*, Forwarded,
	// Origin, Cookie, Authorization, User-Agent). Hop-by-hop and handshake headers are set
	// by Dial and must not be in it.
	Header http.Header
	// DialTimeout bounds the TCP connect; a timeout answers 503 (backend unreachable).
	DialTimeout time.Duration
	// HandshakeTimeout bounds the backend's 101 after the connect; a timeout answers 504.
	HandshakeTimeout time.Duration
	// TCPKeepalive is the idle time before, and the interval between, TCP keepalive probes on
	// the backend socket; zero sends none.
	TCPKeepalive time.Duration
}

// Backend is an upgraded backend connection.
type Backend struct {
	Conn net.Conn
	// Reader wraps Conn; it may already hold frames the backend sent right after its 101. It
	// comes from GetReader: pass it to NewPair, or give it back with PutReader.
	Reader *bufio.Reader
	// Subprotocol is the backend's Sec-WebSocket-Protocol choice ("" for none).
	Subprotocol string
	// SetCookie holds the backend's Set-Cookie headers, to return to the client.
	SetCookie []string
}

// DialError is a failed backend dial or handshake with the HTTP status the client gets.
type DialError struct {
	Status int    // 502, 503 or 504 (DESIGN.md, handshake table)
	Reason string // short text for the client's body and the log
	Err    error
}

func (e *DialError) Error() string {
	if e.Err == nil {
		return e.Reason
	}
	return e.Reason + ": " + e.Err.Error()
}

func (e *DialError) Unwrap() error { return e.Err }

// maxResponseHeader bounds the backend's handshake response.
const maxResponseHeader = 16 << 10

// Dial connects to the backend and performs the client side of the RFC 6455 opening handshake
// (section 4.1) with a fresh random key. On failure it returns a *DialError whose Status maps
// the cause: refused, reset or a bad answer is 502; unreachable (connect timeout, no route,
// DNS failure) is 503; a handshake that does not finish in time is 504.
func Dial(ctx context.Context, req *BackendRequest) (*Backend, error) {
	host := req.URL.Host
	if req.URL.Port() == "" {
		host = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	d := net.Dialer{Timeout: req.DialTimeout, KeepAlive: -1} // -1: not Go's default probes every 15 s
	if req.TCPKeepalive > 0 {
		d.KeepAliveConfig = KeepAliveConfig(req.TCPKeepalive)
	}
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, dialError(err)
	}
	// TCP_NODELAY is already set: Go sets it on every TCPConn it makes.
	b, err := handshake(conn, req)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return b, nil
}

// KeepAliveConfig returns the TCP keepalive probes for a tcp_keepalive of d (positive): the
// first after d without traffic, then every d, and the connection is dropped after 9 go
// unanswered. Where tcp_keepalive is off, sockets are made with none at all rather than with
// Go's default (probes every 15 s), which costs four setsockopt calls per socket and a timer
// and packets per idle connection.
func KeepAliveConfig(d time.Duration) net.KeepAliveConfig {
	return net.KeepAliveConfig{Enable: true, Idle: d, Interval: d, Count: 9}
}

func dialError(err error) *DialError {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return &DialError{Status: http.StatusBadGateway, Reason: "backend refused the connection", Err: err}
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return &DialError{Status: http.StatusServiceUnavailable, Reason: "backend unreachable (connect timeout)", Err: err}
	default:
		return &DialError{Status: http.StatusServiceUnavailable, Reason: "backend unreachable", Err: err}
	}
}

func handshake(conn net.Conn, req *BackendRequest) (*Backend, error) {
	if req.HandshakeTimeout > 0 {
		conn.SetDeadline(time.Now().Add(req.HandshakeTimeout))
	}
	var raw [16]byte
	rand.Read(raw[:])
	key := base64.StdEncoding.EncodeToString(raw[:])

	var sb strings.Builder
	sb.Grow(512)
	uri := req.URL.RequestURI()
	sb.WriteString("GET ")
	sb.WriteString(uri)
	sb.WriteString(" HTTP/1.1\r\nHost: ")
	sb.WriteString(req.URL.Host)
	sb.WriteString("\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ")
	sb.WriteString(key)
	sb.WriteString("\r\n")
	for name, values := range req.Header {
		for _, v := range values {
			sb.WriteString(name)
			sb.WriteString(": ")
			sb.WriteString(v)
			sb.WriteString("\r\n")
		}
	}
	sb.WriteString("\r\n")
	if _, err := conn.Write([]byte(sb.String())); err != nil {
		return nil, handshakeIOError(err)
	}

	br := GetReader(conn)
	head := GetReader(&limitedPeek{br: br, left: maxResponseHeader}) // pooled: one per dial
	resp, err := http.ReadResponse(head, nil)
	if err != nil {
		PutReader(head)
		PutReader(br)
		return nil, handshakeIOError(err)
	}
	ok := false
	defer func() {
		if !ok {
			PutReader(br)
		}
	}()
	resp.Body.Close() // the body, if any, reads from head: close it before head goes back
	PutReader(head)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, &DialError{Status: http.StatusBadGateway, Reason: fmt.Sprintf("backend answered %d instead of 101", resp.StatusCode)}
	}
	if !httphdr.HasToken(resp.Header, "Upgrade", "websocket") || !httphdr.HasToken(resp.Header, "Connection", "upgrade") {
		return nil, &DialError{Status: http.StatusBadGateway, Reason: "backend 101 without Upgrade: websocket"}
	}
	if resp.Header.Get("Sec-WebSocket-Accept") != wsframe.AcceptKey(key) {
		return nil, &DialError{Status: http.StatusBadGateway, Reason: "backend 101 with a wrong Sec-WebSocket-Accept"}
	}
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		return nil, &DialError{Status: http.StatusBadGateway, Reason: "backend accepted an extension that was not offered"}
	}
	proto := resp.Header.Get("Sec-WebSocket-Protocol")
	if proto != "" && !offered(req.Header, proto) {
		return nil, &DialError{Status: http.StatusBadGateway, Reason: "backend chose a subprotocol that was not offered"}
	}
	conn.SetDeadline(time.Time{})
	ok = true
	return &Backend{Conn: conn, Reader: br, Subprotocol: proto, SetCookie: resp.Header.Values("Set-Cookie")}, nil
}

// limitedPeek reads the response head from br one buffered chunk at a time, without taking
// more bytes from br than the head needs: http.ReadResponse wraps it in its own small
// bufio.Reader, so it must not read past the blank line, or frames sent right after the 101
// would be lost. It reads byte runs up to and including each '\n'.
type limitedPeek struct {
	br   *bufio.Reader
	left int
	done bool
}

func (l *limitedPeek) Read(p []byte) (int, error) {
	if l.done {
		return 0, errors.New("read past response head")
	}
	if l.left <= 0 {
		return 0, errors.New("backend response head too large")
	}
	line, err := l.br.ReadSlice('\n')
	if len(line) > len(p) {
		// Give back what does not fit: ReadSlice's data stays valid until the next read.
		n := copy(p, line)
		l.left -= n
		return n, errors.New("backend response line too long")
	}
	n := copy(p, line)
	l.left -= n
	if err == nil {
		if n <= 2 && (n == 1 || line[0] == '\r') {
			l.done = true
		}
	}
	return n, err
}

func offered(h http.Header, proto string) bool {
	return slices.Contains(httphdr.Tokens(h, "Sec-WebSocket-Protocol"), proto)
}

func handshakeIOError(err error) *DialError {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &DialError{Status: http.StatusGatewayTimeout, Reason: "backend handshake timed out", Err: err}
	}
	return &DialError{Status: http.StatusBadGateway, Reason: "backend handshake failed", Err: err}
}
