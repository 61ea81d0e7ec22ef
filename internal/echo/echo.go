// Package echo is the built-in echo backend of `wsgate demo`: a WebSocket server written with
// github.com/coder/websocket (an implementation independent of wsgate's own codec) that sends
// every message back with its type.
package echo

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Handler echoes every message of every WebSocket connection on any path. Messages may be up
// to 64 MiB.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
			Subprotocols:       r.Header.Values("Sec-WebSocket-Protocol"),
			InsecureSkipVerify: true,
		})
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(64 << 20)
		ctx := r.Context()
		for {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				return
			}
			if err := c.Write(ctx, typ, msg); err != nil {
				return
			}
		}
	})
}

// Server is a running echo backend.
type Server struct {
	srv    *http.Server
	ln     net.Listener
	err    chan error
	cancel context.CancelFunc
	wg     sync.WaitGroup // handlers, which outlive Serve once hijacked
}

// Listen starts an echo backend on addr ("127.0.0.1:0" for any free port).
func Listen(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{ln: ln, err: make(chan error, 1), cancel: cancel}
	h := Handler()
	s.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.wg.Add(1)
			defer s.wg.Done()
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	go func() { s.err <- s.srv.Serve(ln) }()
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server and its connections and waits for Serve to return.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
	s.cancel() // ends the upgraded connections' reads
	s.srv.Close()
	s.wg.Wait()
	if err := <-s.err; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
