package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/gateway"
	"github.com/wsgate/wsgate/internal/memtrim"
)

// Stats is what `soak serve` reports on GET /stats.
type Stats struct {
	Goroutines int    `json:"goroutines"`
	HeapInuse  uint64 `json:"heap_inuse"` // after a forced GC when ?gc=1
	HeapAlloc  uint64 `json:"heap_alloc"`
	FDs        int    `json:"fds"`
	RSSKiB     int64  `json:"rss_kib"`
	Conns      int    `json:"conns"` // the gateway's open client connections
}

func readStats(g *gateway.Gateway, gc bool) Stats {
	if gc {
		runtime.GC()
		runtime.GC() // the second cycle empties sync.Pools' victim caches
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fds, _ := os.ReadDir("/proc/self/fd")
	return Stats{
		Goroutines: runtime.NumGoroutine(), HeapInuse: ms.HeapInuse, HeapAlloc: ms.HeapAlloc,
		FDs: len(fds), RSSKiB: rssKiB(), Conns: g.ActiveConnections(),
	}
}

// serveMain runs a gateway from a configuration file until stdin closes (so it never
// outlives the test that started it), then drains it.
func serveMain(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	cfgFile := fs.String("config", "", "HCL configuration (listener \"pub\")")
	level := fs.String("log", "warn", "log level: debug, info, warn, error")
	logFile := fs.String("logfile", "", "log to this file (default stderr)")
	fs.Parse(args)
	cfg, diags := config.Load(*cfgFile)
	if diags.HasErrors() {
		log.Fatal(diags.Error())
	}
	var lv slog.Level
	lv.UnmarshalText([]byte(*level))
	w := os.Stderr
	if *logFile != "" {
		f, err := os.Create(*logFile)
		if err != nil {
			log.Fatal(err)
		}
		defer f.Close()
		w = f
	}
	g := gateway.New(cfg, gateway.Options{Logger: slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv}))})
	if err := g.Start(); err != nil {
		log.Fatal(err)
	}
	// Memory behaves as in `wsgate run`: GOGC 50 unless set, and free pages given back after
	// a burst (internal/memtrim), so RSS figures from a soak are the binary's.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	trimCtx, stopTrim := context.WithCancel(context.Background())
	waitTrim := memtrim.Start(trimCtx, memtrim.Options{})
	defer func() {
		stopTrim()
		waitTrim()
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(readStats(g, r.URL.Query().Get("gc") == "1"))
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index) // heap and goroutine profiles, for leak hunts
	go http.Serve(ln, mux)
	fmt.Printf("gateway %s stats %s pid %d\n", g.Addr("pub"), ln.Addr(), os.Getpid())
	os.Stdout.Sync()
	var b [1]byte
	for {
		if _, err := os.Stdin.Read(b[:]); err != nil {
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	g.Drain(ctx)
}

// echoMain runs a gorilla echo backend until stdin closes.
func echoMain(args []string) {
	fs := flag.NewFlagSet("echo", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	fs.Parse(args)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }, ReadBufferSize: 1024, WriteBufferSize: 1024}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			typ, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(typ, msg); err != nil {
				return
			}
		}
	}))
	fmt.Printf("echo %s pid %d\n", ln.Addr(), os.Getpid())
	os.Stdout.Sync()
	var b [1]byte
	for {
		if _, err := os.Stdin.Read(b[:]); err != nil {
			return
		}
	}
}

// nextIP returns base + n as an IPv4 address (loopback source addresses for the generator).
func nextIP(base net.IP, n int) net.IP {
	b := base.To4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(n)
	return net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// checkLoopback refuses any target outside 127.0.0.0/8.
func checkLoopback(hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return err
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() || ip.To4() == nil {
		return fmt.Errorf("target %s is not an IPv4 loopback address", hostport)
	}
	return nil
}
