// Package config loads and validates wsgate's HCL configuration (see DESIGN.md,
// "Configuration"). Load returns a fully resolved *Config: defaults applied, sizes and durations
// parsed, per-route limits merged over the top-level limits block, so the rest of the program
// never re-interprets configuration text.
package config

import (
	"net/url"
	"time"
)

// Config is a loaded, validated configuration.
type Config struct {
	// DrainTimeout bounds how long SIGTERM waits for close handshakes. Default 30s.
	DrainTimeout time.Duration
	// Listeners in file order; names are unique.
	Listeners []*Listener
	// Admin is nil when there is no admin block.
	Admin *Admin
	// Log is the log block with defaults applied.
	Log Log
	// Limits is the top-level limits block with defaults applied (what a route inherits).
	Limits Limits
	// Routes in file order; paths are unique.
	Routes []*Route
	// Hash is a hex SHA-256 of the configuration file's bytes (for the reload metric).
	Hash string
	// Filename is the path the configuration was read from.
	Filename string
}

// Listener is one `listen "name" { ... }` block.
type Listener struct {
	Name    string
	Address string
	// TLS is nil for a plain ws:// listener.
	TLS *TLS
	// MaxConnections caps concurrent connections on this listener; 0 means no cap.
	// New handshakes beyond it get 503.
	MaxConnections int
	// TrustedProxies are CIDRs whose X-Forwarded-For is believed for the client IP.
	TrustedProxies []string
}

// TLS is a listener's tls block: exactly one of ACME, Certificates (files) is set.
type TLS struct {
	ACME *ACME
	// Certificates are file pairs; SNI picks among them. The shorthand
	// `cert_file`/`key_file` directly in the tls block becomes the first entry.
	Certificates []CertFiles
	// OnDemand enables on-demand issuance (with ACME); nil when off.
	OnDemand *OnDemand
	// MinVersion is "1.2" (default) or "1.3".
	MinVersion string
	// Curves are the key exchanges allowed (names from TLSCurves; Go orders them); nil
	// means Go's default set (X25519MLKEM768, X25519, P-256, P-384, P-521).
	Curves []string
	// HTTPAddress is where the HTTP-01 solver and the https redirect listen ("" = off,
	// for example ":80").
	HTTPAddress string
}

// ACME is the acme block.
type ACME struct {
	Domains []string
	Email   string
	// CA is the ACME directory URL. Default Let's Encrypt production.
	CA string
	// CARoot is a PEM file of a private CA to trust for the ACME API; "" means system roots.
	CARoot string
	// Storage is the certmagic FileStorage directory.
	Storage string
	// Challenges lists enabled solvers: "http-01", "tls-alpn-01". Default both.
	Challenges []string
}

// CertFiles is one certificate/key pair on disk.
type CertFiles struct {
	CertFile string
	KeyFile  string
}

// OnDemand is the on_demand block: a name is issued only if Ask approves it (HTTP 200 for
// GET Ask?domain=NAME) or it matches one of Allow (patterns like "*.example.com").
type OnDemand struct {
	Ask   string
	Allow []string
}

// Admin is the admin block.
type Admin struct {
	Address string
}

// Log is the log block.
type Log struct {
	// Format is "json" or "text"; "" means json unless stdout is a terminal.
	Format string
	// Level is "debug", "info", "warn" or "error". Default "info".
	Level string
}

// OnLimit says what a rate limit does when exceeded.
type OnLimit string

// OnLimit values.
const (
	OnLimitThrottle OnLimit = "throttle"
	OnLimitClose    OnLimit = "close"
)

// Limits is a resolved limits block (see config.hcl for each field's cost). Zero for a size
// or rate means unlimited; zero for a timeout means none. Burst and BackendBurst are at least 1.
type Limits struct {
	MaxFrameSize             int64         // largest frame payload; default 1 MiB; 0 = unlimited
	MaxMessageSize           int64         // largest message (sum of fragments); default 4 MiB; 0 = unlimited
	MessagesPerSecond        float64       // client->backend rate; default 100; 0 = unlimited
	BytesPerSecond           int64         // client->backend rate; default 1 MiB; 0 = unlimited
	Burst                    int           // messages allowed above the rate at once; default 200
	OnLimit                  OnLimit       // default throttle
	HandshakeTimeout         time.Duration // client request head + upgrade; default 10s
	IdleTimeout              time.Duration // no data frame either way; default 5m
	PingInterval             time.Duration // keepalive pings to each side; default 30s; 0 = none
	PongTimeout              time.Duration // wait for a pong; default 10s
	CloseTimeout             time.Duration // wait for the close reply; default 5s
	WriteTimeout             time.Duration // one write to a peer; default 10s
	TCPKeepalive             time.Duration // TCP keepalive probes on both sockets; default 0 = off
	DialTimeout              time.Duration // backend TCP dial; default 5s
	BackendHandshakeTimeout  time.Duration // backend 101; default 10s
	MaxConnectionsPerIP      int           // default 1000; 0 = no cap
	HandshakesPerIPPerSecond float64       // default 50; 0 = unlimited
	MaxConnections           int           // per route; 0 = no cap
	BackendMessagesPerSecond float64       // backend->client rate; 0 = off
	BackendBytesPerSecond    int64         // backend->client rate; 0 = off
	BackendBurst             int           // burst of the backend->client limiter; default = Burst
}

// Route is one `route "PATH" { ... }` block with its limits fully resolved.
type Route struct {
	// Path is the route's label. Ending in "/" matches the subtree, otherwise exact.
	Path    string
	Backend *url.URL // ws:// URL
	// StripPrefix removes Path (less a trailing "/") from the request path before it is
	// appended to the backend URL's path.
	StripPrefix bool
	// Subprotocols is the allow-list of offers forwarded to the backend; empty = all.
	Subprotocols []string
	// AllowedOrigins; empty = any origin. Entries are full origins or "*".
	AllowedOrigins []string
	ValidateUTF8   bool
	// Listen restricts the route to these listener names; empty = all listeners.
	Listen []string
	// TLSOnly refuses plain ws:// handshakes on this route (403).
	TLSOnly bool
	// ForwardAuth passes Cookie and Authorization headers to the backend. Default true.
	ForwardAuth bool
	Limits      Limits
}
