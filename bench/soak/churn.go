package main

import (
	"bufio"
	crand "crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsgate/wsgate/wsframe"
)

// ChurnResult is the JSON line `soak churn` prints.
type ChurnResult struct {
	Workers        int              `json:"workers"`
	Proxied        int              `json:"proxied_workers"`
	Seconds        float64          `json:"seconds"`
	Connections    int64            `json:"connections"` // TCP connections opened
	ConnsPerSec    float64          `json:"conns_per_s"`
	Upgraded       int64            `json:"upgraded"`  // 101 answers
	Echoed         int64            `json:"echoed"`    // proxied connections that echoed their message
	Refused        int64            `json:"refused"`   // HTTP answers other than 101 to proxied workers
	Hostile        int64            `json:"hostile"`   // hostile connections completed
	Errors         int64            `json:"errors"`    // proxied workers: dial/upgrade/echo failures
	PeakOpen       int64            `json:"peak_open"` // most connections open at once (generator side)
	FirstError     string           `json:"first_error"`
	HostileAnswers map[string]int64 `json:"hostile_answers"`
}

// churnMain opens -c connections from 127.0.0.2 onwards (-per-ip per source address) and keeps
// them cycling for -d: -proxied of the workers upgrade, echo one message, hold the connection
// a random while and end it (close handshake, close frame then TCP close, or TCP reset); the
// others are hostile at the handshake (trickled heads cut by handshake_timeout, garbage, an
// unknown path, a reset mid-request, an upgrade followed by a protocol violation).
func churnMain(args []string) {
	fs := flag.NewFlagSet("churn", flag.ExitOnError)
	target := fs.String("url", "", "ws://127.0.0.1:PORT/PATH of the gateway")
	workers := fs.Int("c", 10000, "concurrent connections (workers)")
	proxied := fs.Int("proxied", 6000, "workers that upgrade and relay")
	dur := fs.Duration("d", 15*time.Second, "duration")
	perIP := fs.Int("per-ip", 50, "workers per source address")
	src := fs.String("src", "127.0.0.2", "first source address")
	hold := fs.Duration("hold", time.Second, "longest hold of a proxied connection")
	fs.Parse(args)
	u, err := url.Parse(*target)
	if err != nil {
		log.Fatal(err)
	}
	if err := checkLoopback(u.Host); err != nil {
		log.Fatal(err)
	}
	base := net.ParseIP(*src)
	if base == nil || !base.IsLoopback() {
		log.Fatal("-src must be a loopback address")
	}
	var (
		res      = ChurnResult{Workers: *workers, Proxied: *proxied, HostileAnswers: map[string]int64{}}
		open     atomic.Int64
		conns    atomic.Int64
		upgraded atomic.Int64
		echoed   atomic.Int64
		refused  atomic.Int64
		hostile  atomic.Int64
		errs     atomic.Int64
		peak     atomic.Int64
		mu       sync.Mutex
		wg       sync.WaitGroup
	)
	fail := func(format string, a ...any) {
		errs.Add(1)
		mu.Lock()
		if res.FirstError == "" {
			res.FirstError = fmt.Sprintf(format, a...)
		}
		mu.Unlock()
	}
	answer := func(kind string) {
		mu.Lock()
		res.HostileAnswers[kind]++
		mu.Unlock()
	}
	start := time.Now()
	deadline := start.Add(*dur)
	for i := range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: nextIP(base, i / *perIP)}, Timeout: 5 * time.Second}
			time.Sleep(time.Duration(rand.Int64N(int64(2 * time.Second)))) // spread the first wave
			for time.Now().Before(deadline) {
				c, err := d.Dial("tcp", u.Host)
				if err != nil {
					if i < *proxied {
						fail("dial: %v", err)
					}
					time.Sleep(100 * time.Millisecond)
					continue
				}
				conns.Add(1)
				n := open.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if i < *proxied {
					switch r := proxiedConn(c, u, *hold); r {
					case "ok":
						upgraded.Add(1)
						echoed.Add(1)
					case "refused 429", "refused 502", "refused 503", "refused 504":
						refused.Add(1)
						answer(r)
					default:
						fail("%s", r)
					}
				} else {
					answer(hostileConn(c, u))
					hostile.Add(1)
				}
				open.Add(-1)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	res.Seconds = el
	res.Connections = conns.Load()
	res.ConnsPerSec = float64(res.Connections) / el
	res.Upgraded, res.Echoed, res.Refused = upgraded.Load(), echoed.Load(), refused.Load()
	res.Hostile, res.Errors, res.PeakOpen = hostile.Load(), errs.Load(), peak.Load()
	json.NewEncoder(os.Stdout).Encode(res)
}

// handshakeRequest is a client opening handshake for path.
func handshakeRequest(u *url.URL, path string) string {
	var key [16]byte
	crand.Read(key[:])
	return "GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(key[:]) + "\r\n\r\n"
}

func clientFrame(op wsframe.Opcode, payload []byte) []byte {
	h := wsframe.Header{Fin: true, Opcode: op, Masked: true}
	k := rand.Uint32()
	h.Mask = [4]byte{byte(k), byte(k >> 8), byte(k >> 16), byte(k >> 24)}
	return wsframe.AppendFrame(nil, h, payload)
}

// proxiedConn upgrades, echoes one message, holds, and ends the connection one of three ways.
// It returns "ok", "refused" (a non-101 answer) or an error description.
func proxiedConn(c net.Conn, u *url.URL, hold time.Duration) string {
	defer c.Close()
	if _, err := io.WriteString(c, handshakeRequest(u, u.RequestURI())); err != nil {
		return "write request: " + err.Error()
	}
	br := bufio.NewReaderSize(c, 1024)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "read response: " + err.Error()
	}
	if resp.StatusCode != 101 {
		return "refused " + strconv.Itoa(resp.StatusCode)
	}
	msg := make([]byte, 16+rand.IntN(200))
	crand.Read(msg)
	if _, err := c.Write(clientFrame(wsframe.OpBinary, msg)); err != nil {
		return "write message: " + err.Error()
	}
	var hb [wsframe.MaxHeaderSize]byte
	h, err := wsframe.ReadHeader(br, &hb)
	if err != nil {
		return "read echo: " + err.Error()
	}
	got := make([]byte, h.Length)
	if _, err := io.ReadFull(br, got); err != nil || h.Opcode != wsframe.OpBinary || string(got) != string(msg) {
		return fmt.Sprintf("bad echo: %v %d bytes %v", h.Opcode, len(got), err)
	}
	time.Sleep(time.Duration(rand.Int64N(int64(hold) + 1)))
	switch rand.IntN(3) {
	case 0: // close handshake
		c.Write(clientFrame(wsframe.OpClose, wsframe.AppendClosePayload(nil, 1000, "")))
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		io.Copy(io.Discard, br)
	case 1: // close frame, then TCP close without waiting
		c.Write(clientFrame(wsframe.OpClose, wsframe.AppendClosePayload(nil, 1001, "")))
	default: // reset
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
	}
	return "ok"
}

// hostileConn misbehaves at the handshake (or just after) and returns what happened.
func hostileConn(c net.Conn, u *url.URL) string {
	defer c.Close()
	br := bufio.NewReaderSize(c, 1024)
	status := func() string {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return "closed"
		}
		return fmt.Sprint(resp.StatusCode)
	}
	switch rand.IntN(6) {
	case 0: // connect, hold, leave
		time.Sleep(time.Duration(rand.Int64N(int64(time.Second))))
		return "silent"
	case 1: // trickle a head until the gateway cuts it (handshake_timeout)
		head := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: x\r\nX-Slow: "
		for i := 0; i < 40; i++ {
			if _, err := c.Write([]byte{head[i%len(head)]}); err != nil {
				return "trickle cut"
			}
			time.Sleep(100 * time.Millisecond)
		}
		return "trickle"
	case 2: // garbage
		c.Write([]byte("\x16\x03\x01\x00\xff garbage\r\n\r\n"))
		return status()
	case 3: // unknown path
		io.WriteString(c, handshakeRequest(u, "/nowhere"))
		return status()
	case 4: // half a request, then a reset
		io.WriteString(c, handshakeRequest(u, u.RequestURI())[:30])
		time.Sleep(time.Duration(rand.Int64N(int64(300 * time.Millisecond))))
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		return "reset"
	default: // upgrade, then a protocol violation (reserved opcode)
		io.WriteString(c, handshakeRequest(u, u.RequestURI()))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return "closed"
		}
		if resp.StatusCode != 101 {
			return fmt.Sprint(resp.StatusCode)
		}
		c.Write(clientFrame(3, []byte("bad")))
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		var hb [wsframe.MaxHeaderSize]byte
		for {
			h, err := wsframe.ReadHeader(br, &hb)
			if err != nil {
				return "violation: no close"
			}
			p := make([]byte, h.Length)
			io.ReadFull(br, p)
			if h.Opcode == wsframe.OpClose {
				code, _, _ := wsframe.ParseClosePayload(p)
				return fmt.Sprintf("violation: %d", code)
			}
		}
	}
}
