package config

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
)

func parse(t *testing.T, src string) (*Config, hcl.Diagnostics) {
	t.Helper()
	return Parse([]byte(src), "test.hcl")
}

// mustParse parses src and fails on any diagnostic, warnings included.
func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	cfg, diags := parse(t, src)
	if len(diags) > 0 || cfg == nil {
		var buf bytes.Buffer
		_ = WriteDiagnostics(&buf, "test.hcl", []byte(src), diags)
		t.Fatalf("unexpected diagnostics:\n%s", buf.String())
	}
	return cfg
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name      string
		src       string
		summary   string
		line, col int
	}{
		{"unknown block type", "listen \"a\" { address = \":1\" }\nbogus {}\n",
			"Unsupported block type", 2, 1},
		{"unknown attribute", "limits {\n  brust = 5\n}\n",
			"Unsupported argument", 2, 3},
		{"unknown top-level attribute", "drain = \"1s\"\n",
			"Unsupported argument", 1, 1},
		{"wrong type", "limits {\n  burst = \"x\"\n}\n",
			"Incorrect attribute value type", 2, 11},
		{"wrong type bool", "route \"/a\" {\n  backend = \"ws://b\"\n  strip_prefix = \"maybe\"\n}\n",
			"Incorrect attribute value type", 3, 18},
		{"wrong type list", "route \"/a\" {\n  backend = \"ws://b\"\n  subprotocols = \"chat\"\n}\n",
			"Incorrect attribute value type", 3, 18},
		{"bad size string", "limits {\n  max_frame_size = \"1 MegaByte\"\n}\n",
			"Invalid size", 2, 20},
		{"fractional size", "limits {\n  max_frame_size = 1.5\n}\n",
			"Invalid size", 2, 20},
		{"size without number", "limits {\n  bytes_per_second = \"KiB\"\n}\n",
			"Invalid size", 2, 22},
		{"bad duration string", "limits {\n  idle_timeout = \"5 minutes\"\n}\n",
			"Invalid duration", 2, 18},
		{"duration without unit", "drain_timeout = 30\n",
			"Invalid duration", 1, 17},
		{"negative number", "limits {\n  burst = -1\n}\n",
			"Negative value", 2, 11},
		{"negative size", "limits {\n  max_message_size = \"-1MiB\"\n}\n",
			"Negative value", 2, 22},
		{"negative size number", "limits {\n  max_message_size = -5\n}\n",
			"Negative value", 2, 22},
		{"negative duration", "limits {\n  ping_interval = \"-5s\"\n}\n",
			"Negative value", 2, 19},
		{"negative rate", "limits {\n  messages_per_second = -0.5\n}\n",
			"Negative value", 2, 25},
		{"negative max_connections", "listen \"a\" {\n  address = \":1\"\n  max_connections = -3\n}\n",
			"Negative value", 3, 21},
		{"zero burst", "limits {\n  burst = 0\n}\n",
			"Value out of range", 2, 11},
		{"fractional burst", "limits {\n  burst = 2.5\n}\n",
			"Whole number required", 2, 11},
		{"huge burst", "limits {\n  burst = 1e30\n}\n",
			"Value out of range", 2, 11},
		{"unknown on_limit", "limits {\n  on_limit = \"drop\"\n}\n",
			"Invalid on_limit value", 2, 14},
		{"duplicate route path", "route \"/a/\" {\n  backend = \"ws://b\"\n}\nroute \"/a/\" {\n  backend = \"ws://c\"\n}\n",
			"Duplicate route path", 4, 7},
		{"duplicate listener name", "listen \"x\" {\n  address = \":1\"\n}\nlisten \"x\" {\n  address = \":2\"\n}\n",
			"Duplicate listener name", 4, 8},
		{"duplicate address", "listen \"x\" {\n  address = \":1\"\n}\nlisten \"y\" {\n  address = \":1\"\n}\n",
			"Duplicate address", 5, 13},
		{"duplicate limits block", "limits {}\nlimits {}\n",
			"Duplicate limits block", 2, 1},
		{"backend wss", "route \"/a\" {\n  backend = \"wss://b/\"\n}\n",
			"Unsupported backend scheme", 2, 13},
		{"backend http", "route \"/a\" {\n  backend = \"http://b/\"\n}\n",
			"Unsupported backend scheme", 2, 13},
		{"backend no host", "route \"/a\" {\n  backend = \"ws:///x\"\n}\n",
			"Invalid backend URL", 2, 13},
		{"route path", "route \"chat\" {\n  backend = \"ws://b\"\n}\n",
			"Invalid route path", 1, 7},
		{"unknown listener", "listen \"public\" {\n  address = \":1\"\n}\nroute \"/a\" {\n  backend = \"ws://b\"\n  listen = [\"public\", \"pub\"]\n}\n",
			"Unknown listener", 6, 23},
		{"tls with acme and files", "listen \"a\" {\n  address = \":1\"\n  tls {\n    cert_file = \"c\"\n    key_file = \"k\"\n    acme {\n      domains = [\"x.example\"]\n    }\n  }\n}\n",
			"Conflicting certificate sources", 6, 5},
		{"tls with acme and certificate block", "listen \"a\" {\n  address = \":1\"\n  tls {\n    acme {\n      domains = [\"x.example\"]\n    }\n    certificate {\n      cert_file = \"c\"\n      key_file = \"k\"\n    }\n  }\n}\n",
			"Conflicting certificate sources", 4, 5},
		{"tls without source", "listen \"a\" {\n  address = \":1\"\n  tls {\n    min_version = \"1.3\"\n  }\n}\n",
			"Missing certificate source", 3, 3},
		{"on_demand without acme", "listen \"a\" {\n  address = \":1\"\n  tls {\n    cert_file = \"c\"\n    key_file = \"k\"\n    on_demand { ask = \"http://x/\" }\n  }\n}\n",
			"on_demand needs acme", 6, 5},
		{"on_demand unrestricted", "listen \"a\" {\n  address = \":1\"\n  tls {\n    acme {}\n    on_demand {}\n  }\n}\n",
			"Unrestricted on-demand TLS", 5, 5},
		{"acme without domains", "listen \"a\" {\n  address = \":1\"\n  tls {\n    acme {\n      domains = []\n    }\n  }\n}\n",
			"Missing ACME domains", 5, 17},
		{"acme wildcard", "listen \"a\" {\n  address = \":1\"\n  tls {\n    acme {\n      domains = [\"a.example\", \"*.example\"]\n    }\n  }\n}\n",
			"Invalid domain", 5, 31},
		{"acme bad ca", "listen \"a\" {\n  address = \":1\"\n  tls {\n    acme {\n      domains = [\"a.example\"]\n      ca = \"letsencrypt\"\n    }\n  }\n}\n",
			"Invalid URL", 6, 12},
		{"acme bad challenge", "listen \"a\" {\n  address = \":1\"\n  tls {\n    acme {\n      domains = [\"a.example\"]\n      challenges = [\"dns-01\"]\n    }\n  }\n}\n",
			"Unknown ACME challenge", 6, 21},
		{"tls min_version", "listen \"a\" {\n  address = \":1\"\n  tls {\n    cert_file = \"c\"\n    key_file = \"k\"\n    min_version = \"1.1\"\n  }\n}\n",
			"Invalid TLS version", 6, 19},
		{"unknown curve", "listen \"a\" {\n  address = \":1\"\n  tls {\n    cert_file = \"c\"\n    key_file = \"k\"\n    curves = [\"x25519\", \"p256\"]\n  }\n}\n",
			"Unknown curve", 6, 25},
		{"duplicate curve", "listen \"a\" {\n  address = \":1\"\n  tls {\n    cert_file = \"c\"\n    key_file = \"k\"\n    curves = [\"x25519\", \"x25519\"]\n  }\n}\n",
			"Duplicate curve", 6, 25},
		{"empty curves", "listen \"a\" {\n  address = \":1\"\n  tls {\n    cert_file = \"c\"\n    key_file = \"k\"\n    curves = []\n  }\n}\n",
			"Empty curves", 6, 14},
		{"cert_file without key_file", "listen \"a\" {\n  address = \":1\"\n  tls {\n    cert_file = \"c\"\n  }\n}\n",
			"Missing required argument", 4, 5},
		{"key_file without cert_file", "listen \"a\" {\n  address = \":1\"\n  tls {\n    key_file = \"k\"\n  }\n}\n",
			"Missing required argument", 4, 5},
		{"bad CIDR", "listen \"a\" {\n  address = \":1\"\n  trusted_proxies = [\"10.0.0.0/8\", \"10.0.0/8\"]\n}\n",
			"Invalid CIDR", 3, 36},
		{"bad address", "listen \"a\" {\n  address = \"443\"\n}\n",
			"Invalid address", 2, 13},
		{"bad port", "admin {\n  address = \"127.0.0.1:99999\"\n}\n",
			"Invalid address", 2, 13},
		{"missing listener address", "listen \"a\" {\n  max_connections = 5\n}\n",
			"Missing required argument", 1, 1},
		{"missing route backend", "route \"/a\" {\n  strip_prefix = true\n}\n",
			"Missing required argument", 1, 1},
		{"missing admin address", "admin {\n}\n",
			"Missing required argument", 1, 1},
		{"missing listener name", "listen {\n  address = \":1\"\n}\n",
			"Missing name for listen", 1, 8},
		{"bad log level", "log {\n  level = \"verbose\"\n}\n",
			"Invalid log level", 2, 11},
		{"bad log format", "log {\n  format = \"xml\"\n}\n",
			"Invalid log format", 2, 12},
		{"bad origin", "route \"/a\" {\n  backend = \"ws://b\"\n  allowed_origins = [\"example.com\"]\n}\n",
			"Invalid origin", 3, 22},
		{"bad subprotocol", "route \"/a\" {\n  backend = \"ws://b\"\n  subprotocols = [\"chat v1\"]\n}\n",
			"Invalid subprotocol", 3, 19},
		{"variables not allowed", "limits {\n  burst = var.x\n}\n",
			"Variables not allowed", 2, 11},
		{"conditional", "limits {\n  burst = true ? 1 : 2\n}\n",
			"Unsupported expression", 2, 11},
		{"operator on string", "limits {\n  burst = \"1e-999999\" * 1\n}\n",
			"Unsupported expression", 2, 11},
		{"for expression", "route \"/a\" {\n  backend = \"ws://b\"\n  listen = [for x in [\"a\"] : x]\n}\n",
			"Unsupported expression", 3, 12},
		{"huge number", "route \"/a\" {\n  backend = \"ws://${1e-999999}\"\n}\n",
			"Number out of range", 2, 21},
		{"syntax error", "limits {\n  burst = \n}\n",
			"Invalid expression", 2, 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, diags := parse(t, tt.src)
			if !diags.HasErrors() {
				t.Fatalf("no error; diags: %v", diags)
			}
			if cfg != nil {
				t.Errorf("cfg is not nil despite errors")
			}
			for _, d := range diags {
				if d.Summary != tt.summary {
					continue
				}
				if d.Severity != hcl.DiagError {
					t.Errorf("severity %v, want error", d.Severity)
				}
				if d.Subject == nil {
					t.Fatalf("%q has no Subject", d.Summary)
				}
				if d.Subject.Filename != "test.hcl" || d.Subject.Start.Line != tt.line || d.Subject.Start.Column != tt.col {
					t.Errorf("%q at %s:%d:%d, want test.hcl:%d:%d", d.Summary,
						d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, tt.line, tt.col)
				}
				if d.Detail == "" {
					t.Errorf("%q has no Detail", d.Summary)
				}
				return
			}
			t.Errorf("no diagnostic %q; got:", tt.summary)
			for _, d := range diags {
				t.Logf("  %s: %s: %s", d.Subject, d.Summary, d.Detail)
			}
		})
	}
}

// Every problem is reported, not only the first.
func TestParseCollectsAllErrors(t *testing.T) {
	src := `
bogus {}
limits {
  burst            = "x"
  max_frame_size   = "1 MegaByte"
  idle_timeout     = "5 minutes"
  on_limit         = "drop"
}
route "/a" {
  backend = "http://x/"
}
route "/a" {
  backend = "wss://x/"
}
`
	_, diags := parse(t, src)
	var got []string
	for _, d := range diags {
		got = append(got, d.Summary)
	}
	want := []string{"Unsupported block type", "Incorrect attribute value type", "Invalid size",
		"Invalid duration", "Invalid on_limit value", "Unsupported backend scheme", "Duplicate route path"}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("missing %q in %q", w, got)
		}
	}
}

func TestParseDefaults(t *testing.T) {
	cfg := mustParse(t, "")
	def := Default()
	if cfg.DrainTimeout != def.DrainTimeout || cfg.Limits != DefaultLimits() || cfg.Log != def.Log {
		t.Errorf("empty file: got %+v, want defaults %+v", cfg, def)
	}
	if cfg.DrainTimeout != 30*time.Second || cfg.Log.Level != "info" || cfg.Log.Format != "" {
		t.Errorf("defaults: drain %v log %+v", cfg.DrainTimeout, cfg.Log)
	}
	if cfg.Admin != nil || len(cfg.Listeners) != 0 || len(cfg.Routes) != 0 {
		t.Errorf("empty file has admin/listeners/routes: %+v", cfg)
	}
	if cfg.Hash != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" {
		t.Errorf("Hash = %s, want sha256 of empty input", cfg.Hash)
	}
	if cfg.Filename != "test.hcl" {
		t.Errorf("Filename = %q", cfg.Filename)
	}
	l := DefaultLimits()
	if l.MaxFrameSize != 1<<20 || l.MaxMessageSize != 4<<20 || l.MessagesPerSecond != 100 ||
		l.BytesPerSecond != 1<<20 || l.Burst != 200 || l.OnLimit != OnLimitThrottle ||
		l.HandshakeTimeout != 10*time.Second || l.IdleTimeout != 5*time.Minute ||
		l.PingInterval != 30*time.Second || l.PongTimeout != 10*time.Second ||
		l.CloseTimeout != 5*time.Second || l.WriteTimeout != 10*time.Second ||
		l.DialTimeout != 5*time.Second || l.BackendHandshakeTimeout != 10*time.Second ||
		l.MaxConnectionsPerIP != 1000 || l.HandshakesPerIPPerSecond != 50 || l.MaxConnections != 0 ||
		l.BackendMessagesPerSecond != 0 || l.BackendBytesPerSecond != 0 || l.BackendBurst != 200 ||
		l.TCPKeepalive != 0 {
		t.Errorf("DefaultLimits() = %+v", l)
	}
}

func TestRouteLimitsMerge(t *testing.T) {
	cfg := mustParse(t, `
limits {
  max_message_size = "8MiB"
  burst            = 50
  idle_timeout     = "1m"
  on_limit         = "close"
  tcp_keepalive    = "2m"
}
route "/a/" {
  backend = "ws://127.0.0.1:1/x"
  limits {
    max_message_size    = 65536
    messages_per_second = 0
    burst               = 10
  }
}
route "/b" {
  backend = "ws://127.0.0.1:2"
  limits {
    backend_burst  = 7
    idle_timeout   = 0
    tcp_keepalive  = "0"
  }
}
route "/c" {
  backend = "ws://127.0.0.1:3"
}
`)
	top := cfg.Limits
	if top.MaxMessageSize != 8<<20 || top.Burst != 50 || top.BackendBurst != 50 || top.IdleTimeout != time.Minute ||
		top.OnLimit != OnLimitClose || top.MaxFrameSize != 1<<20 || top.TCPKeepalive != 2*time.Minute {
		t.Errorf("top limits %+v", top)
	}
	a, b, c := cfg.Routes[0].Limits, cfg.Routes[1].Limits, cfg.Routes[2].Limits
	if a.MaxMessageSize != 65536 || a.MessagesPerSecond != 0 || a.Burst != 10 || a.BackendBurst != 10 ||
		a.IdleTimeout != time.Minute || a.OnLimit != OnLimitClose || a.PingInterval != 30*time.Second ||
		a.TCPKeepalive != 2*time.Minute {
		t.Errorf("route /a/ limits %+v", a)
	}
	if b.BackendBurst != 7 || b.Burst != 50 || b.IdleTimeout != 0 || b.MaxMessageSize != 8<<20 || b.TCPKeepalive != 0 {
		t.Errorf("route /b limits %+v", b)
	}
	if c != top {
		t.Errorf("route /c limits %+v, want top-level %+v", c, top)
	}
}

func TestParseValues(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", "/xdg")
	cfg := mustParse(t, `
drain_timeout = "1m30s"
log {
  format = "text"
  level  = "debug"
}
listen "tls" {
  address         = ":8443"
  max_connections = 10
  trusted_proxies = ["10.1.2.3/8", "192.0.2.1", "::1"]
  tls {
    acme {
      domains = ["ws.example.com"]
      email   = null
    }
    on_demand {
      allow = ["*.example.com"]
    }
  }
}
listen "files" {
  address = "127.0.0.1:8444"
  tls {
    cert_file = "a.pem"
    key_file  = "a.key"
    certificate {
      cert_file = "b.pem"
      key_file  = "b.key"
    }
    min_version = "1.3"
  }
}
route "/x/" {
  backend         = "ws://127.0.0.1:8001/ws?room=1"
  strip_prefix    = true
  subprotocols    = ["a.v1", "b"]
  allowed_origins = ["HTTPS://Example.com", "*"]
  validate_utf8   = true
  listen          = ["files", "tls", "files"]
  tls_only        = true
  forward_auth    = false
}
`)
	if cfg.DrainTimeout != 90*time.Second || cfg.Log.Format != "text" || cfg.Log.Level != "debug" {
		t.Errorf("drain/log: %v %+v", cfg.DrainTimeout, cfg.Log)
	}
	l := cfg.Listeners[0]
	if l.Name != "tls" || l.Address != ":8443" || l.MaxConnections != 10 ||
		!slices.Equal(l.TrustedProxies, []string{"10.0.0.0/8", "192.0.2.1/32", "::1/128"}) {
		t.Errorf("listener %+v", l)
	}
	a := l.TLS.ACME
	if a == nil || !slices.Equal(a.Domains, []string{"ws.example.com"}) || a.Email != "" || a.CA != DefaultACMECA ||
		a.Storage != filepath.Join("/xdg", "wsgate", "certs") || !slices.Equal(a.Challenges, []string{"http-01", "tls-alpn-01"}) {
		t.Errorf("acme %+v", a)
	}
	if l.TLS.OnDemand == nil || !slices.Equal(l.TLS.OnDemand.Allow, []string{"*.example.com"}) || l.TLS.MinVersion != "1.2" {
		t.Errorf("tls %+v", l.TLS)
	}
	f := cfg.Listeners[1].TLS
	if f.ACME != nil || f.MinVersion != "1.3" ||
		!slices.Equal(f.Certificates, []CertFiles{{"a.pem", "a.key"}, {"b.pem", "b.key"}}) {
		t.Errorf("files tls %+v", f)
	}
	r := cfg.Routes[0]
	if r.Path != "/x/" || r.Backend.String() != "ws://127.0.0.1:8001/ws?room=1" || !r.StripPrefix ||
		!slices.Equal(r.Subprotocols, []string{"a.v1", "b"}) ||
		!slices.Equal(r.AllowedOrigins, []string{"https://example.com", "*"}) ||
		!r.ValidateUTF8 || !slices.Equal(r.Listen, []string{"files", "tls"}) || !r.TLSOnly || r.ForwardAuth {
		t.Errorf("route %+v", r)
	}
}

func TestPortZeroMayRepeat(t *testing.T) {
	cfg := mustParse(t, "listen \"a\" { address = \"127.0.0.1:0\" }\nlisten \"b\" { address = \"127.0.0.1:0\" }\n")
	if len(cfg.Listeners) != 2 {
		t.Errorf("listeners %+v", cfg.Listeners)
	}
}

func TestRouteDefaults(t *testing.T) {
	cfg := mustParse(t, "route \"/\" {\n  backend = \"ws://b:80\"\n}\n")
	r := cfg.Routes[0]
	if !r.ForwardAuth || r.StripPrefix || r.ValidateUTF8 || r.TLSOnly || r.Listen != nil ||
		r.Subprotocols != nil || r.AllowedOrigins != nil || r.Limits != DefaultLimits() {
		t.Errorf("route defaults %+v", r)
	}
}

func TestACMEStorageDefault(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", "relative/ignored")
	t.Setenv("HOME", "/home/u")
	got, err := DefaultACMEStorage()
	if err != nil || got != filepath.Join("/home/u", ".local", "share", "wsgate", "certs") {
		t.Errorf("DefaultACMEStorage() = %q, %v", got, err)
	}
}

func TestWarnings(t *testing.T) {
	cfg, diags := parse(t, `
listen "plain" { address = ":1" }
route "/a" {
  backend  = "ws://b"
  tls_only = true
}
`)
	if cfg == nil || diags.HasErrors() || len(diags) != 1 || diags[0].Summary != "Route is unreachable" {
		t.Errorf("cfg %v, diags %v", cfg, diags)
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  bool
	}{
		{"0", 0, false},
		{"512", 512, false},
		{"512B", 512, false},
		{"64KiB", 64 << 10, false},
		{"64 KiB", 64 << 10, false},
		{"1MiB", 1 << 20, false},
		{"1mib", 1 << 20, false},
		{"1GiB", 1 << 30, false},
		{"2TiB", 2 << 40, false},
		{"10KB", 10000, false},
		{"1MB", 1000000, false},
		{"1GB", 1e9, false},
		{"1.5KiB", 1536, false},
		{" 7 ", 7, false},
		{"9223372036854775807", 1<<63 - 1, false},
		{"9223372036854775808", 0, true},
		{"8388608TiB", 0, true},
		{"1.5", 0, true},
		{"0.1B", 0, true},
		{"", 0, true},
		{"KiB", 0, true},
		{".", 0, true},
		{"-1", 0, true},
		{"+1", 0, true},
		{"1e3", 0, true},
		{"1 MegaByte", 0, true},
		{"1.2.3", 0, true},
		{"1Ki", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestWriteDiagnostics(t *testing.T) {
	src := []byte("limits {\n  max_frame_size = \"1 MegaByte\"\n}\n")
	_, diags := Parse(src, "w.hcl")
	var buf bytes.Buffer
	if err := WriteDiagnostics(&buf, "w.hcl", src, diags); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"Error: Invalid size", "on w.hcl line 2", `max_frame_size = "1 MegaByte"`, "64KiB"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	cfg, diags := Load(filepath.Join(t.TempDir(), "nope.hcl"))
	if cfg != nil || !diags.HasErrors() || diags[0].Summary != "Cannot read configuration file" || diags[0].Subject == nil {
		t.Errorf("cfg %v diags %v", cfg, diags)
	}
}

// The documented example at the repository root must load cleanly.
func TestExampleConfig(t *testing.T) {
	cfg, diags := Load("../config.hcl")
	if len(diags) > 0 {
		src, _ := os.ReadFile("../config.hcl")
		var buf bytes.Buffer
		_ = WriteDiagnostics(&buf, "../config.hcl", src, diags)
		t.Fatalf("config.hcl:\n%s", buf.String())
	}
	if len(cfg.Listeners) != 2 || cfg.Listeners[0].Name != "public" || cfg.Listeners[0].TLS.ACME == nil ||
		cfg.Listeners[1].Name != "dev" || cfg.Listeners[1].TLS != nil {
		t.Errorf("listeners %+v", cfg.Listeners)
	}
	if cfg.Admin == nil || cfg.Admin.Address != "127.0.0.1:9090" {
		t.Errorf("admin %+v", cfg.Admin)
	}
	if cfg.Limits.MaxFrameSize != 1<<20 || cfg.Limits.WriteTimeout != 10*time.Second {
		t.Errorf("limits %+v", cfg.Limits)
	}
	chat := cfg.Routes[0]
	if chat.Path != "/chat/" || chat.Backend.String() != "ws://127.0.0.1:8001/ws" ||
		chat.Limits.MaxMessageSize != 64<<10 || chat.Limits.MaxFrameSize != 1<<20 ||
		!slices.Equal(chat.Listen, []string{"public"}) {
		t.Errorf("/chat/ route %+v", chat)
	}
	if len(cfg.Hash) != 64 {
		t.Errorf("Hash %q", cfg.Hash)
	}
}

// Every attribute the loader accepts is documented in config.hcl (set or in a comment).
func TestExampleDocumentsEveryField(t *testing.T) {
	src, err := os.ReadFile("../config.hcl")
	if err != nil {
		t.Fatal(err)
	}
	schemas := []*hcl.BodySchema{rootSchema, listenSchema, tlsSchema, acmeSchema, certificateSchema,
		onDemandSchema, adminSchema, logSchema, routeSchema, limitsSchema}
	for _, s := range schemas {
		for _, a := range s.Attributes {
			if !regexp.MustCompile(`(?m)^\s*#?\s*` + a.Name + `\s*=`).Match(src) {
				t.Errorf("config.hcl does not document %q", a.Name)
			}
		}
		for _, b := range s.Blocks {
			if !regexp.MustCompile(`(?m)^\s*#?\s*` + b.Type + `\b[^=]*\{`).Match(src) {
				t.Errorf("config.hcl does not document block %q", b.Type)
			}
		}
	}
}

// Every limits field of DESIGN.md's example appears in config.hcl and is understood.
func TestExampleCoversDesignLimits(t *testing.T) {
	var design []byte
	for _, p := range []string{"../DESIGN.md", "../docs/DESIGN.md", "../../shared/DESIGN.md"} {
		if b, err := os.ReadFile(p); err == nil {
			design = b
			break
		}
	}
	if design == nil {
		t.Skip("DESIGN.md not found")
	}
	m := regexp.MustCompile("(?s)```hcl\n.*?\nlimits \\{[^\n]*\n(.*?)\n\\}").FindSubmatch(design)
	if m == nil {
		t.Fatal("no limits block in DESIGN.md's HCL example")
	}
	names := regexp.MustCompile(`(?m)^\s*(\w+)\s*=`).FindAllSubmatch(m[1], -1)
	if len(names) < 10 {
		t.Fatalf("found only %d limits fields in DESIGN.md", len(names))
	}
	src, err := os.ReadFile("../config.hcl")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		name := string(n[1])
		if !regexp.MustCompile(`(?m)^\s*` + name + `\s*=`).Match(src) {
			t.Errorf("config.hcl lacks limits field %q from DESIGN.md", name)
		}
		if !slices.ContainsFunc(limitFields, func(f limitField) bool { return f.name == name }) {
			t.Errorf("loader does not know limits field %q from DESIGN.md", name)
		}
	}
}

// DESIGN.md's own example (the contract) must keep loading.
func TestDesignExampleLoads(t *testing.T) {
	var design []byte
	for _, p := range []string{"../DESIGN.md", "../docs/DESIGN.md", "../../shared/DESIGN.md"} {
		if b, err := os.ReadFile(p); err == nil {
			design = b
			break
		}
	}
	if design == nil {
		t.Skip("DESIGN.md not found")
	}
	m := regexp.MustCompile("(?s)## Configuration \\(HCL\\).*?```hcl\n(.*?)```").FindSubmatch(design)
	if m == nil {
		t.Fatal("no HCL example in DESIGN.md")
	}
	t.Setenv("XDG_DATA_HOME", "/xdg")
	cfg, diags := Parse(m[1], "DESIGN.md")
	if diags.HasErrors() {
		var buf bytes.Buffer
		_ = WriteDiagnostics(&buf, "DESIGN.md", m[1], diags)
		t.Fatalf("DESIGN.md example:\n%s", buf.String())
	}
	if len(cfg.Routes) != 1 || cfg.Routes[0].Limits.MaxMessageSize != 64<<10 || cfg.Limits.HandshakesPerIPPerSecond != 50 {
		t.Errorf("cfg %+v", cfg)
	}
}

func FuzzParse(f *testing.F) {
	if src, err := os.ReadFile("../config.hcl"); err == nil {
		f.Add(src)
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		cfg, diags := Parse(src, "fuzz.hcl")
		if diags.HasErrors() != (cfg == nil) {
			t.Fatalf("cfg %v with diags %v", cfg != nil, diags)
		}
		for _, d := range diags {
			if d.Subject == nil || d.Summary == "" {
				t.Fatalf("diagnostic without subject or summary: %#v", d)
			}
		}
		if err := WriteDiagnostics(new(bytes.Buffer), "fuzz.hcl", src, diags); err != nil {
			t.Fatal(err)
		}
	})
}

// Numbers with extreme exponents must not make the loader slow (cty stringifies numbers in time
// quadratic in the exponent).
func TestExtremeNumbersAreFast(t *testing.T) {
	for _, src := range []string{
		"limits {\n max_frame_size = 1.5e-999999\n}",
		"limits {\n max_frame_size = 1e999999\n}",
		"limits {\n burst = \"1.5e-999999\"\n}",
		"limits {\n max_frame_size = 1e-1000 * 1e-1000 * 1e-1000 * 1e-1000 * 1e-1000\n}",
		"route \"/a\" {\n backend = \"${1e-1000 * 1e-1000 * 1e-1000 * 1e-1000 * 1e-1000 * 1e-1000}\"\n}",
		"route \"/a\" {\n backend = 1e-1200\n}",
	} {
		start := time.Now()
		cfg, diags := parse(t, src)
		if el := time.Since(start); el > time.Second {
			t.Errorf("%q took %v", src, el)
		}
		if cfg != nil || !diags.HasErrors() {
			t.Errorf("%q: no error", src)
		}
	}
}

func TestArithmetic(t *testing.T) {
	cfg := mustParse(t, "limits {\n  max_frame_size = 1024 * 1024\n  burst = (10 + 5) * 2\n}\n")
	if cfg.Limits.MaxFrameSize != 1<<20 || cfg.Limits.Burst != 30 {
		t.Errorf("limits %+v", cfg.Limits)
	}
}

func TestUnsupportedArgumentHint(t *testing.T) {
	_, diags := parse(t, "limits {\n  brust = 5\n}\n")
	if len(diags) != 1 || !strings.Contains(diags[0].Detail, "burst") || !strings.Contains(diags[0].Detail, "max_frame_size") {
		t.Errorf("diags %v", diags)
	}
}
