package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// A connect that does not finish within dial_timeout is "no backend reachable": 503.
func TestDialTimeoutIs503(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = Dial(context.Background(), &BackendRequest{
		URL:         &url.URL{Scheme: "ws", Host: ln.Addr().String(), Path: "/"},
		DialTimeout: time.Nanosecond,
	})
	var de *DialError
	if !errors.As(err, &de) || de.Status != http.StatusServiceUnavailable {
		t.Fatalf("got %v, want a 503 DialError", err)
	}
}
