package config

import (
	"errors"
	"os"
	"path/filepath"
	"time"
)

// Defaults that are not limits.
const (
	DefaultDrainTimeout = 30 * time.Second
	DefaultLogLevel     = "info"
	DefaultTLSVersion   = "1.2"
	DefaultACMECA       = "https://acme-v02.api.letsencrypt.org/directory"
)

// DefaultACMEChallenges are the solvers enabled when an acme block has no challenges attribute.
var DefaultACMEChallenges = []string{"http-01", "tls-alpn-01"}

// Default returns the configuration `wsgate demo` and tests start from: no listeners, no admin
// block, no routes, every default applied.
func Default() *Config {
	return &Config{
		DrainTimeout: DefaultDrainTimeout,
		Log:          Log{Level: DefaultLogLevel},
		Limits:       DefaultLimits(),
	}
}

// DefaultLimits returns the limits a route gets when neither the top-level limits block nor the
// route's own limits block sets a field.
func DefaultLimits() Limits {
	return Limits{
		MaxFrameSize:             1 << 20,
		MaxMessageSize:           4 << 20,
		MessagesPerSecond:        100,
		BytesPerSecond:           1 << 20,
		Burst:                    200,
		OnLimit:                  OnLimitThrottle,
		HandshakeTimeout:         10 * time.Second,
		IdleTimeout:              5 * time.Minute,
		PingInterval:             30 * time.Second,
		PongTimeout:              10 * time.Second,
		CloseTimeout:             5 * time.Second,
		WriteTimeout:             10 * time.Second,
		TCPKeepalive:             0, // the keepalive pings find dead peers (nginx and HAProxy send no probes either)
		DialTimeout:              5 * time.Second,
		BackendHandshakeTimeout:  10 * time.Second,
		MaxConnectionsPerIP:      1000,
		HandshakesPerIPPerSecond: 50,
		MaxConnections:           0,
		BackendMessagesPerSecond: 0,
		BackendBytesPerSecond:    0,
		BackendBurst:             200, // = Burst
	}
}

// DefaultACMEStorage is where certificates go when an acme block has no storage attribute:
// $XDG_DATA_HOME/wsgate/certs, or ~/.local/share/wsgate/certs when XDG_DATA_HOME is unset or
// not absolute (the XDG Base Directory rules).
func DefaultACMEStorage() (string, error) {
	if dir := os.Getenv("XDG_DATA_HOME"); dir != "" && filepath.IsAbs(dir) {
		return filepath.Join(dir, "wsgate", "certs"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	if home == "" {
		return "", errors.New("no home directory")
	}
	return filepath.Join(home, ".local", "share", "wsgate", "certs"), nil
}
