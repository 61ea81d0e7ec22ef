package gateway

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/httphdr"
	"github.com/wsgate/wsgate/wsframe"
)

// MaxHeaderBytes bounds a client's request head (request line and headers). A larger head is
// answered 431. As in net/http, up to 4 KiB of read-ahead beyond it may be tolerated.
const MaxHeaderBytes = 16 << 10

// readerSize is the per-connection read buffer (it later feeds the relay).
const readerSize = 4 << 10

// errHeaderTooLarge marks a request head over MaxHeaderBytes.
var errHeaderTooLarge = errors.New("request header too large")

// headLimiter counts bytes read from the connection until the handshake is done; it fails
// reads past the limit so a huge head cannot pin memory.
type headLimiter struct {
	conn     net.Conn
	left     int
	limiting bool
	hit      bool
}

func (l *headLimiter) Read(p []byte) (int, error) {
	if !l.limiting {
		return l.conn.Read(p)
	}
	if l.left <= 0 {
		l.hit = true
		return 0, errHeaderTooLarge
	}
	if len(p) > l.left {
		p = p[:l.left]
	}
	n, err := l.conn.Read(p)
	l.left -= n
	return n, err
}

// refusal is a handshake answered with an HTTP error instead of 101.
type refusal struct {
	status int
	reason string      // body text and log reason
	header http.Header // extra response headers
	logErr error       // cause for the log line, not sent to the client
}

func (r *refusal) Error() string { return fmt.Sprintf("%d %s", r.status, r.reason) }

func refuse(status int, reason string, kv ...string) *refusal {
	r := &refusal{status: status, reason: reason}
	if len(kv) > 0 {
		r.header = make(http.Header)
		for i := 0; i+1 < len(kv); i += 2 {
			r.header.Set(kv[i], kv[i+1])
		}
	}
	return r
}

// writeRefusal writes a short plain-text HTTP error response and asks the client to close.
func writeRefusal(w io.Writer, r *refusal) error {
	body := r.reason + "\n"
	var sb strings.Builder
	fmt.Fprintf(&sb, "HTTP/1.1 %d %s\r\n", r.status, http.StatusText(r.status))
	sb.WriteString("Content-Type: text/plain; charset=utf-8\r\n")
	sb.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n")
	sb.WriteString("Connection: close\r\n")
	for k, vs := range r.header {
		for _, v := range vs {
			sb.WriteString(k + ": " + v + "\r\n")
		}
	}
	sb.WriteString("\r\n")
	sb.WriteString(body)
	_, err := io.WriteString(w, sb.String())
	return err
}

// readRequest reads the client's request head and checks its header fields.
func readRequest(br *bufio.Reader, lim *headLimiter) (*http.Request, *refusal) {
	req, err := http.ReadRequest(br)
	if err != nil {
		if lim.hit || errors.Is(err, errHeaderTooLarge) {
			return nil, refuse(http.StatusRequestHeaderFieldsTooLarge, "request header too large")
		}
		if errors.Is(err, io.EOF) {
			return nil, nil // closed before a request: nothing to answer
		}
		return nil, refuse(http.StatusBadRequest, "malformed request")
	}
	// As net/http's server: http.ReadRequest takes a name with a space in it, say, and the
	// headers go on to the backend.
	for k, vs := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, refuse(http.StatusBadRequest, "invalid header name")
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, refuse(http.StatusBadRequest, "invalid header value")
			}
		}
	}
	return req, nil
}

// checkUpgrade validates a request for a route against RFC 6455 section 4.2.1 and the
// route's rules, in the order of DESIGN.md's handshake table.
func checkUpgrade(req *http.Request, rt *config.Route, isTLS bool) *refusal {
	if req.ProtoMajor != 1 {
		// As net/http's server and nginx: "HTTP/2.0" or "HTTP/3.0" in an HTTP/1 request line.
		return refuse(http.StatusHTTPVersionNotSupported, "HTTP version not supported")
	}
	if !httphdr.HasToken(req.Header, "Upgrade", "websocket") || !httphdr.HasToken(req.Header, "Connection", "upgrade") {
		return refuse(http.StatusUpgradeRequired, "this route only speaks WebSocket", "Upgrade", "websocket", "Connection", "Upgrade")
	}
	if req.Method != http.MethodGet {
		return refuse(http.StatusBadRequest, "WebSocket handshake must use GET")
	}
	if !req.ProtoAtLeast(1, 1) {
		return refuse(http.StatusBadRequest, "WebSocket handshake needs HTTP/1.1")
	}
	if req.Host == "" {
		return refuse(http.StatusBadRequest, "missing Host header")
	}
	if !httpguts.ValidHostHeader(req.Host) {
		// As net/http's server: RFC 9112 section 3.2 asks a 400 for an invalid Host, and
		// the value goes on to the backend in X-Forwarded-Host and Forwarded.
		return refuse(http.StatusBadRequest, "invalid Host header")
	}
	if req.ContentLength > 0 || len(req.TransferEncoding) > 0 {
		return refuse(http.StatusBadRequest, "WebSocket handshake must not have a body")
	}
	keys := req.Header.Values("Sec-WebSocket-Key")
	if len(keys) != 1 || !wsframe.ValidKey(keys[0]) {
		return refuse(http.StatusBadRequest, "missing or invalid Sec-WebSocket-Key")
	}
	if v := req.Header.Values("Sec-WebSocket-Version"); len(v) != 1 || strings.TrimSpace(v[0]) != "13" {
		return refuse(http.StatusUpgradeRequired, "unsupported Sec-WebSocket-Version", "Sec-WebSocket-Version", "13")
	}
	if !originAllowed(rt, req.Header.Get("Origin")) {
		return refuse(http.StatusForbidden, "origin not allowed")
	}
	if rt.TLSOnly && !isTLS {
		return refuse(http.StatusForbidden, "this route requires wss://")
	}
	return nil
}

func originAllowed(rt *config.Route, origin string) bool {
	if len(rt.AllowedOrigins) == 0 {
		return true
	}
	for _, o := range rt.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	return false
}

// hopHeaders are not forwarded to the backend: hop-by-hop headers (RFC 7230 section 6.1) and
// the handshake's own, which the backend dial writes itself.
var hopHeaders = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization", "Proxy-Authenticate",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Host", "Content-Length",
	"Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions",
	"Sec-Websocket-Protocol", "Sec-Websocket-Accept",
	"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded",
}

// backendHeader builds the headers forwarded to the backend: the client's end-to-end headers,
// the subprotocol offers the route allows, and the forwarding headers.
func backendHeader(req *http.Request, rt *config.Route, hs *handshake) http.Header {
	h := make(http.Header, len(req.Header)+4)
	drop := hopHeaders
	for _, t := range httphdr.Tokens(req.Header, "Connection") {
		drop = append(drop[:len(drop):len(drop)], textproto.CanonicalMIMEHeaderKey(t))
	}
	for k, vs := range req.Header {
		if slices.Contains(drop, k) {
			continue
		}
		if !rt.ForwardAuth && (k == "Cookie" || k == "Authorization") {
			continue
		}
		h[k] = vs
	}
	if offers := filterProtocols(req.Header, rt.Subprotocols); len(offers) > 0 {
		h.Set("Sec-WebSocket-Protocol", strings.Join(offers, ", "))
	}
	proto := "http"
	if hs.isTLS {
		proto = "https"
	}
	xff := hs.peer
	if hs.prior != "" {
		xff = hs.prior + ", " + hs.peer
	}
	h.Set("X-Forwarded-For", xff)
	h.Set("X-Forwarded-Proto", proto)
	h.Set("X-Forwarded-Host", req.Host)
	forIP := hs.ip
	if strings.Contains(forIP, ":") {
		forIP = `"[` + forIP + `]"`
	}
	h.Set("Forwarded", "for="+forIP+";host="+forwardedValue(req.Host)+";proto="+proto)
	return h
}

// forwardedValue returns s as a Forwarded parameter value (RFC 7239 section 4): a token as it
// is, anything else as a quoted-string. A valid Host may hold ',', ';' and '=' (RFC 3986
// sub-delims), which unquoted would add parameters or elements of the client's choosing (a
// Host of "x,for=192.0.2.1" a second hop's for=).
func forwardedValue(s string) string {
	token := s != ""
	for i := 0; i < len(s) && token; i++ {
		token = httpguts.IsTokenRune(rune(s[i]))
	}
	if token {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

// filterProtocols returns the client's subprotocol offers, in order, that the allow-list
// permits (all of them when the list is empty).
func filterProtocols(h http.Header, allow []string) []string {
	var out []string
	for _, p := range httphdr.Tokens(h, "Sec-WebSocket-Protocol") {
		if len(allow) == 0 || slices.Contains(allow, p) {
			out = append(out, p)
		}
	}
	return out
}
