package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/wsgate/wsgate/wsframe"
)

// FuzzBackendHandshake answers the gateway's opening handshake with a backend (handshake, the
// client side of RFC 6455 section 4.1) with arbitrary bytes, in which "{accept}" stands for the
// right Sec-WebSocket-Accept of the key the gateway sent. It checks that
//   - nothing panics, and handshake returns;
//   - a refused answer is a *DialError with status 502;
//   - an accepted answer is a 101 with Upgrade: websocket, and the backend's choices passed on
//     to the client are safe to write in its 101: a subprotocol the request offered, and
//     Set-Cookie values that are valid header values;
//   - the Reader handed to the relay yields exactly the bytes the backend sent after the
//     answer's head (frames sent right behind the 101 are neither lost nor read twice).
//
// offer selects the request's Sec-WebSocket-Protocol offer: bit 0 "chat", bit 1 "v2".
//
//	go test -run '^$' -fuzz FuzzBackendHandshake -fuzzminimizetime 100x ./proxy
func FuzzBackendHandshake(f *testing.F) {
	const ok = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
	frame := string(wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpText}, []byte("hello")))
	f.Add([]byte(ok+"\r\n"), byte(0))
	f.Add([]byte(ok+"\r\n"+frame+frame), byte(0))
	f.Add([]byte(ok+"Sec-WebSocket-Protocol: v2\r\nSet-Cookie: a=1; Path=/\r\nSet-Cookie: b=2\r\n\r\n"+frame), byte(3))
	f.Add([]byte(ok+"Sec-WebSocket-Protocol: evil\r\n\r\n"), byte(1))
	f.Add([]byte(ok+"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"), byte(0))
	f.Add([]byte("HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\nConnection: upgrade\nSec-WebSocket-Accept: {accept}\n\n"+frame), byte(0))
	f.Add([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: d3Jvbmc=\r\n\r\n"), byte(0))
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"), byte(0))
	f.Add([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"), byte(0)) // cut short
	f.Add([]byte(ok+"X-Long: "+strings.Repeat("a", 20<<10)+"\r\n\r\n"), byte(0))
	f.Fuzz(func(t *testing.T, answer []byte, offer byte) {
		if len(answer) > 64<<10 {
			answer = answer[:64<<10] // the socket pair's buffer takes it all without a reader
		}
		hdr := http.Header{}
		if offer&3 != 0 {
			var offers []string
			if offer&1 != 0 {
				offers = append(offers, "chat")
			}
			if offer&2 != 0 {
				offers = append(offers, "v2")
			}
			hdr.Set("Sec-WebSocket-Protocol", strings.Join(offers, ", "))
		}
		gw, be := socketPair(t)
		sent := make(chan []byte, 1) // what the backend answered, nil if it got no request
		done := make(chan struct{})
		defer func() { gw.Close(); <-done }()
		go func() {
			defer close(done)
			defer be.Close()
			be.SetDeadline(time.Now().Add(5 * time.Second))
			req, err := http.ReadRequest(bufio.NewReader(be))
			if err != nil {
				sent <- nil
				return
			}
			out := append([]byte{}, bytes.ReplaceAll(answer, []byte("{accept}"), []byte(wsframe.AcceptKey(req.Header.Get("Sec-WebSocket-Key"))))...)
			sent <- out
			be.Write(out)
		}()
		b, err := handshake(gw, &BackendRequest{
			URL:              &url.URL{Scheme: "ws", Host: "backend.test", Path: "/"},
			Header:           hdr,
			HandshakeTimeout: 5 * time.Second,
		})
		out := <-sent
		if out == nil {
			t.Fatal("the backend did not get a request")
		}
		if err != nil {
			var de *DialError
			if !errors.As(err, &de) || de.Status != http.StatusBadGateway {
				t.Fatalf("answer %q: %v, want a 502 DialError", out, err)
			}
			return
		}
		defer PutReader(b.Reader)
		if b.Subprotocol != "" && !offered(hdr, b.Subprotocol) {
			t.Fatalf("subprotocol %q accepted, offered %q", b.Subprotocol, hdr.Get("Sec-WebSocket-Protocol"))
		}
		for _, c := range b.SetCookie {
			if !httpguts.ValidHeaderFieldValue(c) {
				t.Fatalf("Set-Cookie %q passed on", c)
			}
		}
		end := headEnd(out)
		if end < 0 {
			t.Fatalf("answer %q accepted without the blank line that ends a head", out)
		}
		rest, err := io.ReadAll(b.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(rest, out[end:]) {
			t.Fatalf("answer %q: the relay reads %q after the head, want %q", out, rest, out[end:])
		}
	})
}

// headEnd returns the length of b's HTTP head: up to and including its first empty line
// ("\r\n" or "\n"), or -1 if it has none.
func headEnd(b []byte) int {
	for i := 0; i < len(b); {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		line := b[i : i+j+1]
		i += j + 1
		if len(line) == 1 || len(line) == 2 && line[0] == '\r' {
			return i
		}
	}
	return -1
}
