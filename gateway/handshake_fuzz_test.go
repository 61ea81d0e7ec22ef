package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/httphdr"
)

// FuzzClientHandshake feeds arbitrary bytes as a client's request head through the
// handshake's parsing and checks (readRequest, checkUpgrade) and, when they accept it, the
// headers built for the backend (backendHeader). It checks that
//   - nothing panics;
//   - a refusal is a 400, 403, 426, 431 or 505, and its answer (writeRefusal) parses back as
//     that response with the reason as its body and nothing after it;
//   - an accepted request gives the backend only valid header fields (nothing a client sends
//     can break the backend's request head), none of the hop-by-hop or handshake headers the
//     gateway drops, no credentials when forward_auth is off, only allowed subprotocol
//     offers, an X-Forwarded-Host equal to the request's Host, and a Forwarded header of one
//     element whose for, host and proto are the gateway's own (a Host holding ',', ';' or '='
//     must not add parameters or elements).
//
// mode selects the route and listener: bit 0 a TLS listener, bit 1 tls_only, bit 2 an
// allowed_origins list, bit 3 forward_auth off, bit 4 a subprotocols allow-list.
//
//	go test -run '^$' -fuzz FuzzClientHandshake -fuzzminimizetime 100x ./gateway
func FuzzClientHandshake(f *testing.F) {
	const upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	f.Add([]byte("GET /chat HTTP/1.1\r\nHost: example.com\r\n"+upgrade+"\r\n"), byte(0))
	f.Add([]byte("GET /chat?x=1 HTTP/1.1\r\nHost: [::1]:8080\r\n"+upgrade+"Origin: https://good.example\r\nSec-WebSocket-Protocol: chat, evil\r\nCookie: s=1\r\n\r\n"), byte(0x1c))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x,for=192.0.2.1\r\n"+upgrade+"\r\n"), byte(0))
	f.Add([]byte("GET http://a;proto=https/ HTTP/1.1\r\nHost: b\r\n"+upgrade+"Connection: X-Secret\r\nX-Secret: 1\r\n\r\n"), byte(1))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a b\r\n"+upgrade+"\r\n"), byte(0))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: a\r\n"+upgrade+"Content-Length: 1\r\n\r\nx"), byte(2))
	f.Add([]byte("GET / HTTP/1.0\r\n"+upgrade+"\r\n"), byte(0))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\n\r\n"), byte(0))
	backend, _ := url.Parse("ws://127.0.0.1:9/")
	f.Fuzz(func(t *testing.T, head []byte, mode byte) {
		req, ref := readRequest(bufio.NewReader(bytes.NewReader(head)), &headLimiter{})
		if req == nil && ref == nil {
			return // the connection ended before a request: nothing is answered
		}
		rt := &config.Route{Path: "/", Backend: backend, TLSOnly: mode&2 != 0, ForwardAuth: mode&8 == 0}
		if mode&4 != 0 {
			rt.AllowedOrigins = []string{"https://good.example"}
		}
		if mode&16 != 0 {
			rt.Subprotocols = []string{"chat"}
		}
		isTLS := mode&1 != 0
		if ref == nil {
			ref = checkUpgrade(req, rt, isTLS)
		}
		if ref != nil {
			checkRefusal(t, ref)
			return
		}
		hs := &handshake{isTLS: isTLS, ip: "192.0.2.7", peer: "192.0.2.7"}
		checkBackendHeader(t, req, rt, hs, backendHeader(req, rt, hs))
	})
}

// checkRefusal fails t unless ref is a status the handshake table allows before routing and
// its answer parses back as that status with the reason as the body.
func checkRefusal(t *testing.T, ref *refusal) {
	t.Helper()
	switch ref.status {
	case http.StatusBadRequest, http.StatusForbidden, http.StatusUpgradeRequired, http.StatusRequestHeaderFieldsTooLarge,
		http.StatusHTTPVersionNotSupported:
	default:
		t.Fatalf("refused with %d (%s)", ref.status, ref.reason)
	}
	var out bytes.Buffer
	if err := writeRefusal(&out, ref); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(&out)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("refusal %q does not parse: %v", out.String(), err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != ref.status || string(body) != ref.reason+"\n" || br.Buffered() != 0 {
		t.Fatalf("refusal parsed as %d %q (%v, %d bytes after), want %d %q", resp.StatusCode, body, err, br.Buffered(), ref.status, ref.reason)
	}
}

// checkBackendHeader fails t unless h, the headers forwarded for req, keep FuzzClientHandshake's
// promises.
func checkBackendHeader(t *testing.T, req *http.Request, rt *config.Route, hs *handshake, h http.Header) {
	t.Helper()
	for k, vs := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			t.Fatalf("invalid header name %q forwarded", k)
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) || strings.ContainsAny(v, "\r\n") {
				t.Fatalf("invalid %s value %q forwarded", k, v)
			}
		}
	}
	own := []string{"Sec-Websocket-Protocol", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded"}
	for _, k := range hopHeaders {
		if _, ok := h[k]; ok && !slices.Contains(own, k) {
			t.Fatalf("%s forwarded: %q", k, h[k])
		}
	}
	for _, k := range httphdr.Tokens(req.Header, "Connection") {
		if k = http.CanonicalHeaderKey(k); h.Get(k) != "" && !slices.Contains(own, k) {
			t.Fatalf("%s, named in Connection, forwarded", k)
		}
	}
	if !rt.ForwardAuth && (h.Get("Cookie") != "" || h.Get("Authorization") != "") {
		t.Fatal("credentials forwarded with forward_auth off")
	}
	if p := h.Get("Sec-WebSocket-Protocol"); p != "" && len(rt.Subprotocols) > 0 && p != "chat" {
		t.Fatalf("subprotocol offers %q forwarded, allowed only chat", p)
	}
	if got := h.Get("X-Forwarded-Host"); got != req.Host {
		t.Fatalf("X-Forwarded-Host %q, Host %q", got, req.Host)
	}
	proto := "http"
	if hs.isTLS {
		proto = "https"
	}
	fwd := h.Values("Forwarded")
	if len(fwd) != 1 {
		t.Fatalf("Forwarded %q", fwd)
	}
	elems, err := parseForwarded(fwd[0])
	want := map[string]string{"for": hs.ip, "host": req.Host, "proto": proto}
	if err != nil || len(elems) != 1 || len(elems[0]) != len(want) {
		t.Fatalf("Forwarded %q parses as %q (%v), want one element %q", fwd[0], elems, err, want)
	}
	for k, v := range want {
		if elems[0][k] != v {
			t.Fatalf("Forwarded %q: %s=%q, want %q", fwd[0], k, elems[0][k], v)
		}
	}
}

// parseForwarded parses a Forwarded header value (RFC 7239 section 4) into its elements, each
// a map of its parameters (names lower-cased, quoted-strings unquoted), failing on anything
// outside the grammar or a parameter given twice in an element.
func parseForwarded(s string) ([]map[string]string, error) {
	var elems []map[string]string
	elem := map[string]string{}
	for {
		eq := strings.IndexByte(s, '=')
		if eq <= 0 || !isToken(s[:eq]) {
			return nil, errForwarded
		}
		name := strings.ToLower(s[:eq])
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				b.WriteByte(s[i])
			}
			if i == len(s) {
				return nil, errForwarded
			}
			val, s = b.String(), s[i+1:]
		} else {
			end := strings.IndexAny(s, ";,")
			if end < 0 {
				end = len(s)
			}
			val, s = s[:end], s[end:]
			if !isToken(val) {
				return nil, errForwarded
			}
		}
		if _, dup := elem[name]; dup {
			return nil, errForwarded
		}
		elem[name] = val
		switch {
		case s == "":
			return append(elems, elem), nil
		case s[0] == ';':
		case s[0] == ',':
			elems = append(elems, elem)
			elem = map[string]string{}
		default:
			return nil, errForwarded
		}
		s = s[1:]
	}
}

var errForwarded = errors.New("malformed Forwarded header")

func isToken(s string) bool {
	for _, r := range s {
		if !httpguts.IsTokenRune(r) {
			return false
		}
	}
	return s != ""
}

// FuzzCleanPath checks cleanPath against path.Clean: where it accepts a path, the result is
// path.Clean's (plus the trailing "/" the path asked for), has no empty, "." or ".." segment,
// and is its own cleaned form; it refuses a path only when its ".." segments climb above the
// root, which path.Clean silently clamps.
//
//	go test -run '^$' -fuzz FuzzCleanPath ./gateway
func FuzzCleanPath(f *testing.F) {
	for _, p := range []string{"/", "/chat/room", "/a//b/./c/", "/a/b/..", "/a/../../b", "/..", "/.", "//", "*", "", "/a/.b/..c/", "/a/b/../"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		clean, ok := cleanPath(p)
		if !strings.HasPrefix(p, "/") {
			if !ok || clean != p {
				t.Fatalf("cleanPath(%q) = %q, %v: want it unchanged", p, clean, ok)
			}
			return
		}
		depth, climbs := 0, false
		for _, seg := range strings.Split(p[1:], "/") {
			switch seg {
			case "", ".":
			case "..":
				depth--
				climbs = climbs || depth < 0
			default:
				depth++
			}
		}
		if ok == climbs {
			t.Fatalf("cleanPath(%q) ok=%v, climbs above the root: %v", p, ok, climbs)
		}
		if !ok {
			return
		}
		if want := path.Clean(p); strings.TrimSuffix(clean, "/") != strings.TrimSuffix(want, "/") && clean != want {
			t.Fatalf("cleanPath(%q) = %q, path.Clean %q", p, clean, want)
		}
		if strings.Contains(clean, "//") || strings.Contains(clean, "/./") || strings.Contains(clean, "/../") ||
			strings.HasSuffix(clean, "/.") || strings.HasSuffix(clean, "/..") {
			t.Fatalf("cleanPath(%q) = %q: not clean", p, clean)
		}
		if again, _ := cleanPath(clean); again != clean {
			t.Fatalf("cleanPath(%q) = %q, then %q", p, clean, again)
		}
		trailing := strings.HasSuffix(p, "/") || strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..")
		if clean != "/" && strings.HasSuffix(clean, "/") != trailing {
			t.Fatalf("cleanPath(%q) = %q: trailing slash not kept as asked", p, clean)
		}
	})
}
