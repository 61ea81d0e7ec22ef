package wsframe_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/wsframe"
)

// Interop tests: wsframe on one side of a real loopback TCP connection,
// gorilla/websocket on the other, once with wsframe as the server and once
// as the client. Both sides run the same script (see gorillaScript and
// wsframeScript): data messages single and fragmented, pings and pongs
// between fragments, and the close handshake.

// peer is a minimal endpoint built from wsframe alone.
type peer struct {
	conn  net.Conn
	r     *bufio.Reader // frames are read from here, not from conn: it may hold bytes already
	role  wsframe.Role  // the role this side reads frames as
	state wsframe.MessageState
	buf   [wsframe.MaxHeaderSize]byte
	data  int // data frames of the last message read
}

type frame struct {
	h       wsframe.Header
	payload []byte
}

// readFrame reads, checks and unmasks one frame.
func (p *peer) readFrame() (frame, error) {
	h, err := wsframe.ReadHeader(p.r, &p.buf)
	if err != nil {
		return frame{}, fmt.Errorf("read header: %w", err)
	}
	if err := h.Check(p.role, 0); err != nil {
		return frame{}, fmt.Errorf("check %+v: %w", h, err)
	}
	if err := p.state.Next(h); err != nil {
		return frame{}, fmt.Errorf("state %+v: %w", h, err)
	}
	payload := make([]byte, h.Length)
	// Read and unmask in small chunks to use the position contract.
	pos := 0
	for pos < len(payload) {
		n, err := p.r.Read(payload[pos:min(pos+13, len(payload))])
		if err != nil {
			return frame{}, fmt.Errorf("read payload: %w", err)
		}
		if h.Masked {
			wsframe.Mask(h.Mask, pos, payload[pos:pos+n])
		}
		pos += n
	}
	return frame{h: h, payload: payload}, nil
}

// readMessage reads the frames of one data message, validating text as
// UTF-8 fragment by fragment; control frames met between fragments are
// returned in ctrl.
func (p *peer) readMessage() (op wsframe.Opcode, msg []byte, ctrl []frame, err error) {
	var v wsframe.UTF8Validator
	p.data = 0
	for {
		f, err := p.readFrame()
		if err != nil {
			return 0, nil, nil, err
		}
		if f.h.Opcode.IsControl() {
			ctrl = append(ctrl, f)
			continue
		}
		if p.state.Opcode() == wsframe.OpText {
			if err := v.Write(f.payload); err != nil {
				return 0, nil, nil, err
			}
		}
		p.data++
		msg = append(msg, f.payload...)
		if !p.state.InMessage() {
			if p.state.Opcode() == wsframe.OpText {
				if err := v.Finish(); err != nil {
					return 0, nil, nil, err
				}
			}
			return p.state.Opcode(), msg, ctrl, nil
		}
	}
}

// writeFrame writes one frame, masked with a fresh key when this side is
// a client (RFC 6455 section 5.3).
func (p *peer) writeFrame(h wsframe.Header, payload []byte) error {
	if p.role == wsframe.RoleClient {
		h.Masked = true
		rand.Read(h.Mask[:])
	}
	_, err := p.conn.Write(wsframe.AppendFrame(nil, h, payload))
	return err
}

// writeMessage writes msg in fragments of at most size bytes.
func (p *peer) writeMessage(op wsframe.Opcode, msg []byte, size int) error {
	for first := true; first || len(msg) > 0; first = false {
		n := min(size, len(msg))
		h := wsframe.Header{Fin: n == len(msg), Opcode: wsframe.OpContinuation}
		if first {
			h.Opcode = op
		}
		if err := p.writeFrame(h, msg[:n]); err != nil {
			return err
		}
		msg = msg[n:]
	}
	return nil
}

func wantFrame(f frame, op wsframe.Opcode, payload string) error {
	if f.h.Opcode != op || string(f.payload) != payload {
		return fmt.Errorf("got %v %q, want %v %q", f.h.Opcode, f.payload, op, payload)
	}
	return nil
}

var scriptMessages = []struct {
	typ  int
	data []byte
}{
	{
		typ:  websocket.TextMessage,
		data: []byte("Hello"),
	},
	{
		typ:  websocket.BinaryMessage,
		data: bytes.Repeat([]byte{0, 1, 2, 0xFF, 0x80}, 60),
	},
	{
		typ:  websocket.TextMessage,
		data: []byte(strings.Repeat("κόσμε 😀 ", 30)),
	},
	{
		typ:  websocket.BinaryMessage,
		data: bytes.Repeat([]byte{7}, 70000), // 64-bit length form
	},
}

// gorillaWrite writes a message with gorilla: short ones with
// WriteMessage, longer ones through NextWriter in 50-byte writes, which
// with a 64-byte write buffer makes gorilla send fragments on both sides.
func gorillaWrite(c *websocket.Conn, typ int, data []byte) error {
	if len(data) < 64 {
		return c.WriteMessage(typ, data)
	}
	w, err := c.NextWriter(typ)
	if err != nil {
		return err
	}
	for len(data) > 0 {
		n := min(50, len(data))
		if _, err := w.Write(data[:n]); err != nil {
			return err
		}
		data = data[n:]
	}
	return w.Close()
}

// gorillaScript is the gorilla/websocket side: it sends each message and
// expects it echoed, pings, then expects a text message sent in fragments
// with pings between them, and a close 4000 "bye".
func gorillaScript(c *websocket.Conn) error {
	var pongs []string
	c.SetPongHandler(func(s string) error {
		pongs = append(pongs, s)
		return nil
	})
	for i, m := range scriptMessages {
		if err := gorillaWrite(c, m.typ, m.data); err != nil {
			return err
		}
		typ, data, err := c.ReadMessage()
		if err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
		if typ != m.typ || !bytes.Equal(data, m.data) {
			return fmt.Errorf("message %d: echo %d %q", i, typ, data[:min(len(data), 20)])
		}
	}
	if err := c.WriteControl(websocket.PingMessage, []byte("ping!"), time.Now().Add(5*time.Second)); err != nil {
		return err
	}
	typ, data, err := c.ReadMessage()
	if err != nil {
		return err
	}
	if typ != websocket.TextMessage || string(data) != "after ping wörld" {
		return fmt.Errorf("fragmented message %d %q", typ, data)
	}
	if len(pongs) != 1 || pongs[0] != "ping!" {
		return fmt.Errorf("pongs %q", pongs)
	}
	_, _, err = c.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 4000 || ce.Text != "bye" {
		return fmt.Errorf("close: %v", err)
	}
	return nil // gorilla's close handler has replied with a close 4000
}

// wsframeScript is the wsframe side of gorillaScript.
func wsframeScript(p *peer) error {
	for i, m := range scriptMessages {
		op, msg, ctrl, err := p.readMessage()
		if err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
		if int(op) != m.typ || !bytes.Equal(msg, m.data) || len(ctrl) != 0 {
			return fmt.Errorf("message %d: %v %q, control %d", i, op, msg[:min(len(msg), 20)], len(ctrl))
		}
		if len(m.data) > 200 && p.data < 2 {
			return fmt.Errorf("message %d: %d bytes in %d frame, want fragments", i, len(msg), p.data)
		}
		// Echo in fragments of 100 bytes: text fragments split runes.
		if err := p.writeMessage(op, msg, 100); err != nil {
			return err
		}
	}
	f, err := p.readFrame()
	if err != nil {
		return err
	}
	if err := wantFrame(f, wsframe.OpPing, "ping!"); err != nil {
		return err
	}
	if err := p.writeFrame(wsframe.Header{Fin: true, Opcode: wsframe.OpPong}, f.payload); err != nil {
		return err
	}
	steps := []struct {
		h       wsframe.Header
		payload string
	}{
		{
			h:       wsframe.Header{Fin: true, Opcode: wsframe.OpPing},
			payload: "srv",
		},
		{
			h:       wsframe.Header{Opcode: wsframe.OpText},
			payload: "after ",
		},
		{
			h:       wsframe.Header{Fin: true, Opcode: wsframe.OpPing},
			payload: "mid",
		},
		{
			h:       wsframe.Header{Opcode: wsframe.OpContinuation},
			payload: "ping w\xc3",
		},
		{
			h:       wsframe.Header{Fin: true, Opcode: wsframe.OpContinuation},
			payload: "\xb6rld",
		},
		{
			h:       wsframe.Header{Fin: true, Opcode: wsframe.OpClose},
			payload: string(wsframe.AppendClosePayload(nil, 4000, "bye")),
		},
	}
	for _, s := range steps {
		if err := p.writeFrame(s.h, []byte(s.payload)); err != nil {
			return err
		}
	}
	for _, want := range []string{"srv", "mid"} {
		f, err := p.readFrame()
		if err != nil {
			return err
		}
		if err := wantFrame(f, wsframe.OpPong, want); err != nil {
			return err
		}
	}
	f, err = p.readFrame()
	if err != nil {
		return err
	}
	code, reason, err := wsframe.ParseClosePayload(f.payload)
	if f.h.Opcode != wsframe.OpClose || code != 4000 || len(reason) != 0 || err != nil {
		return fmt.Errorf("close reply %v %d %q %v", f.h.Opcode, code, reason, err)
	}
	return nil
}

func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// TestInteropGorillaClient: wsframe reads as a server the frames gorilla
// writes as a client, and gorilla reads the frames wsframe writes.
func TestInteropGorillaClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		// A small write buffer makes gorilla fragment larger messages.
		d := websocket.Dialer{WriteBufferSize: 64, HandshakeTimeout: 5 * time.Second}
		c, _, err := d.Dial("ws://"+ln.Addr().String()+"/", nil)
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		done <- gorillaScript(c)
	}()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	req, err := http.ReadRequest(br)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
		acceptKey(req.Header.Get("Sec-WebSocket-Key")))
	p := &peer{conn: conn, r: br, role: wsframe.RoleServer}
	if err := wsframeScript(p); err != nil {
		t.Fatalf(
			"wsframe server: %v",
			err)
	}
	if err := <-done; err != nil {
		t.Fatalf(
			"gorilla client: %v",
			err)
	}
}

// TestInteropGorillaServer: wsframe reads as a client the frames gorilla
// writes as a server, and gorilla reads the masked frames wsframe writes.
func TestInteropGorillaServer(t *testing.T) {
	done := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := websocket.Upgrader{WriteBufferSize: 64}
		c, err := u.Upgrade(w, r, nil)
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		done <- gorillaScript(c)
	}))
	defer srv.Close()

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
		srv.Listener.Addr(), key)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != acceptKey(key) {
		t.Fatalf(
			"handshake: %s %v",
			resp.Status, resp.Header)
	}
	p := &peer{conn: conn, r: br, role: wsframe.RoleClient}
	if err := wsframeScript(p); err != nil {
		t.Fatalf(
			"wsframe client: %v",
			err)
	}
	if err := <-done; err != nil {
		t.Fatalf(
			"gorilla server: %v",
			err)
	}
}
