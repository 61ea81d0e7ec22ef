package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// Load reads and parses filename. diags contains HCL diagnostics (with Subject ranges: file,
// line, column) for every problem; cfg is nil when diags.HasErrors(). Warnings may accompany a
// valid configuration.
func Load(filename string) (*Config, hcl.Diagnostics) {
	src, err := os.ReadFile(filename)
	if err != nil {
		return nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Cannot read configuration file",
			Detail:   fmt.Sprintf("%v. Pass an existing HCL file with -config (see config.hcl for an example).", err),
			Subject:  &hcl.Range{Filename: filename, Start: hcl.InitialPos, End: hcl.InitialPos},
		}}
	}
	return Parse(src, filename)
}

// Parse parses src as if read from filename (which only names the file in diagnostics).
func Parse(src []byte, filename string) (*Config, hcl.Diagnostics) {
	file, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() || file == nil {
		return nil, diags
	}
	body, ok := file.Body.(*hclsyntax.Body)
	if !ok { // cannot happen: ParseConfig always returns a native syntax body
		return nil, append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Unsupported syntax",
			Detail: "Only native HCL syntax is supported.", Subject: &hcl.Range{Filename: filename, Start: hcl.InitialPos, End: hcl.InitialPos}})
	}
	if cd := checkConstants(body); cd.HasErrors() {
		diags = append(diags, cd...)
		sortDiagnostics(diags)
		return nil, diags
	}
	d := &decoder{diags: diags}
	cfg := d.root(body)
	sortDiagnostics(d.diags)
	if d.diags.HasErrors() {
		return nil, d.diags
	}
	sum := sha256.Sum256(src)
	cfg.Hash = hex.EncodeToString(sum[:])
	cfg.Filename = filename
	return cfg, d.diags
}

// sortDiagnostics orders diags by position, so a file reads top to bottom.
func sortDiagnostics(diags hcl.Diagnostics) {
	sort.SliceStable(diags, func(i, j int) bool {
		a, b := diags[i].Subject, diags[j].Subject
		if a == nil || b == nil {
			return a == nil && b != nil
		}
		if a.Filename != b.Filename {
			return a.Filename < b.Filename
		}
		return a.Start.Byte < b.Start.Byte
	})
}

// WriteDiagnostics prints diags in HCL's own text format, with a source snippet for every
// diagnostic whose Subject lies in filename (whose contents are src). Used by `wsgate validate`
// and to report reload errors.
func WriteDiagnostics(w io.Writer, filename string, src []byte, diags hcl.Diagnostics) error {
	files := map[string]*hcl.File{filename: {Bytes: src}}
	return hcl.NewDiagnosticTextWriter(w, files, 0, false).WriteDiagnostics(diags)
}

var (
	rootSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "drain_timeout"}},
		Blocks: []hcl.BlockHeaderSchema{
			{Type: "listen", LabelNames: []string{"name"}},
			{Type: "admin"},
			{Type: "log"},
			{Type: "limits"},
			{Type: "route", LabelNames: []string{"path"}},
		},
	}
	listenSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "address"}, {Name: "max_connections"}, {Name: "trusted_proxies"}},
		Blocks:     []hcl.BlockHeaderSchema{{Type: "tls"}},
	}
	tlsSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "cert_file"}, {Name: "key_file"}, {Name: "min_version"}, {Name: "curves"}, {Name: "http_address"}},
		Blocks:     []hcl.BlockHeaderSchema{{Type: "acme"}, {Type: "certificate"}, {Type: "on_demand"}},
	}
	acmeSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "domains"}, {Name: "email"}, {Name: "ca"}, {Name: "ca_root"}, {Name: "storage"}, {Name: "challenges"}},
	}
	certificateSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "cert_file"}, {Name: "key_file"}},
	}
	onDemandSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "ask"}, {Name: "allow"}},
	}
	adminSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "address"}},
	}
	logSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "format"}, {Name: "level"}},
	}
	routeSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "backend"}, {Name: "strip_prefix"}, {Name: "subprotocols"}, {Name: "allowed_origins"},
			{Name: "validate_utf8"}, {Name: "listen"}, {Name: "tls_only"}, {Name: "forward_auth"},
		},
		Blocks: []hcl.BlockHeaderSchema{{Type: "limits"}},
	}
)

const addressHint = `An address is host:port, for example ":443", "0.0.0.0:80" or "127.0.0.1:9000"`

func (d *decoder) root(body hcl.Body) *Config {
	c := d.content(body, rootSchema)
	cfg := Default()

	if attr := c.Attributes["drain_timeout"]; attr != nil {
		if v, ok := d.duration(attr, "close every connection at once"); ok {
			cfg.DrainTimeout = v
		}
	}

	listeners := map[string]*Listener{}
	var listenerNames []string
	listenerAt := map[string]hcl.Range{}
	addressAt := map[string]hcl.Range{}
	for _, b := range c.Blocks.OfType("listen") {
		name := b.Labels[0]
		if at, dup := listenerAt[name]; dup {
			d.errorf(b.LabelRanges[0], "Duplicate listener name",
				"A listener named %q is already declared at %s. Listener names must be unique; routes refer to them in `listen`.", name, at)
			continue
		}
		if name == "" {
			d.errorf(b.LabelRanges[0], "Invalid listener name", `A listener needs a non-empty name, for example listen "public" { ... }.`)
			continue
		}
		listenerAt[name] = b.LabelRanges[0]
		l := d.listener(b, addressAt)
		listeners[name] = l
		listenerNames = append(listenerNames, name)
		cfg.Listeners = append(cfg.Listeners, l)
	}

	if b := d.single(c.Blocks, "admin"); b != nil {
		ac := d.content(b.Body, adminSchema)
		d.required(ac, b.DefRange, "address", `where /metrics, /healthz and /readyz listen, for example "127.0.0.1:9090".`)
		if addr, ok := d.address(ac.Attributes["address"]); ok {
			cfg.Admin = &Admin{Address: addr}
			d.uniqueAddress(addressAt, addr, ac.Attributes["address"].Expr.Range())
		}
	}

	if b := d.single(c.Blocks, "log"); b != nil {
		lc := d.content(b.Body, logSchema)
		if attr := lc.Attributes["format"]; attr != nil {
			cfg.Log.Format = d.keyword(attr, "Invalid log format", `format must be "json" or "text" (leave it out for json, or text when stdout is a terminal)`, "json", "text")
		}
		if attr := lc.Attributes["level"]; attr != nil {
			if v := d.keyword(attr, "Invalid log level", `level must be "debug", "info", "warn" or "error"`, "debug", "info", "warn", "error"); v != "" {
				cfg.Log.Level = v
			}
		}
	}

	var top limitsPatch
	if b := d.single(c.Blocks, "limits"); b != nil {
		top = d.limits(b.Body)
	}
	cfg.Limits = resolveLimits(top)

	routeAt := map[string]hcl.Range{}
	for _, b := range c.Blocks.OfType("route") {
		path := b.Labels[0]
		if at, dup := routeAt[path]; dup {
			d.errorf(b.LabelRanges[0], "Duplicate route path",
				"A route for %q is already declared at %s. Each path may have one route; merge them or use distinct paths (\"/chat/\" matches the subtree, \"/chat\" only itself).", path, at)
			continue
		}
		routeAt[path] = b.LabelRanges[0]
		cfg.Routes = append(cfg.Routes, d.route(b, top, listeners, listenerNames))
	}
	return cfg
}

// keyword decodes a string that must be one of allowed; "" when it is not (reported).
func (d *decoder) keyword(attr *hcl.Attribute, summary, hint string, allowed ...string) string {
	s, ok := d.str(attr, hint+".")
	if !ok {
		return ""
	}
	if slices.Contains(allowed, s) {
		return s
	}
	d.errorf(attr.Expr.Range(), summary, "%s; got %q.", hint, s)
	return ""
}

// address decodes a host:port string.
func (d *decoder) address(attr *hcl.Attribute) (string, bool) {
	s, ok := d.str(attr, addressHint+".")
	if !ok {
		return "", false
	}
	if err := checkAddress(s); err != nil {
		d.errorf(attr.Expr.Range(), "Invalid address", "%q: %v. %s.", s, err, addressHint)
		return "", false
	}
	return s, true
}

func checkAddress(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		if ae, ok := err.(*net.AddrError); ok {
			return fmt.Errorf("%s", ae.Err)
		}
		return err
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

// uniqueAddress reports a second socket on the same address (which could never bind). Port 0
// (any free port, as tests use) never collides.
func (d *decoder) uniqueAddress(seen map[string]hcl.Range, addr string, rng hcl.Range) {
	if _, port, err := net.SplitHostPort(addr); err == nil && strings.TrimLeft(port, "0") == "" {
		return
	}
	if at, dup := seen[addr]; dup {
		d.errorf(rng, "Duplicate address", "%q is already used at %s; two sockets cannot listen on one address.", addr, at)
		return
	}
	seen[addr] = rng
}

func (d *decoder) listener(b *hcl.Block, addressAt map[string]hcl.Range) *Listener {
	c := d.content(b.Body, listenSchema)
	l := &Listener{Name: b.Labels[0]}
	d.required(c, b.DefRange, "address", `where this listener accepts connections. `+addressHint+".")
	if addr, ok := d.address(c.Attributes["address"]); ok {
		l.Address = addr
		d.uniqueAddress(addressAt, addr, c.Attributes["address"].Expr.Range())
	}
	if v, ok := d.integer(c.Attributes["max_connections"], 0, "no cap"); ok {
		l.MaxConnections = v
	}
	const cidrHint = `trusted_proxies is a list of CIDRs such as ["10.0.0.0/8", "::1/128"] (a bare IP means that one address)`
	if attr := c.Attributes["trusted_proxies"]; attr != nil {
		list, ranges, _ := d.strList(attr, cidrHint+".")
		l.TrustedProxies = []string{}
		for i, s := range list {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				ip, ierr := netip.ParseAddr(s)
				if ierr != nil {
					d.errorf(ranges[i], "Invalid CIDR", "%q is neither a CIDR nor an IP address. %s.", s, cidrHint)
					continue
				}
				p = netip.PrefixFrom(ip, ip.BitLen())
			}
			l.TrustedProxies = append(l.TrustedProxies, p.Masked().String())
		}
	}
	if tb := d.single(c.Blocks, "tls"); tb != nil {
		l.TLS = d.tls(tb, addressAt)
	}
	return l
}

const certHint = `A tls block takes either an acme block (automatic certificates) or certificate files: cert_file and key_file, and/or certificate { cert_file = "..." key_file = "..." } blocks`

func (d *decoder) tls(b *hcl.Block, addressAt map[string]hcl.Range) *TLS {
	c := d.content(b.Body, tlsSchema)
	t := &TLS{MinVersion: DefaultTLSVersion}

	// Files: the shorthand first, then certificate blocks.
	var filesAt *hcl.Range
	certAttr, keyAttr := c.Attributes["cert_file"], c.Attributes["key_file"]
	if certAttr != nil || keyAttr != nil {
		var rng hcl.Range
		if certAttr != nil {
			rng = certAttr.NameRange
		} else {
			rng = keyAttr.NameRange
		}
		filesAt = &rng
		t.Certificates = append(t.Certificates, d.certFiles(c, rng))
	}
	for _, cb := range c.Blocks.OfType("certificate") {
		if filesAt == nil {
			filesAt = cb.DefRange.Ptr()
		}
		cc := d.content(cb.Body, certificateSchema)
		t.Certificates = append(t.Certificates, d.certFiles(cc, cb.DefRange))
	}

	ab := d.single(c.Blocks, "acme")
	switch {
	case ab != nil && filesAt != nil:
		d.errorf(ab.DefRange, "Conflicting certificate sources",
			"This tls block has both an acme block and certificate files (at %s). %s, not both.", filesAt, certHint)
	case ab == nil && filesAt == nil:
		d.errorf(b.DefRange, "Missing certificate source", "%s. Remove the tls block for a plain ws:// listener.", certHint)
	}

	ob := d.single(c.Blocks, "on_demand")
	if ob != nil && ab == nil {
		d.errorf(ob.DefRange, "on_demand needs acme",
			"On-demand TLS issues certificates through ACME during the handshake; add an acme block or remove on_demand.")
	} else if ob != nil {
		t.OnDemand = d.onDemand(ob)
	}
	if ab != nil {
		t.ACME = d.acme(ab, t.OnDemand != nil)
	}

	if attr := c.Attributes["min_version"]; attr != nil {
		if v := d.keyword(attr, "Invalid TLS version", `min_version must be "1.2" or "1.3"`, "1.2", "1.3"); v != "" {
			t.MinVersion = v
		}
	}
	if attr := c.Attributes["curves"]; attr != nil {
		t.Curves = d.curves(attr)
	}
	if attr := c.Attributes["http_address"]; attr != nil {
		if addr, ok := d.address(attr); ok {
			t.HTTPAddress = addr
			d.uniqueAddress(addressAt, addr, attr.Expr.Range())
		}
	}
	if t.ACME != nil && t.HTTPAddress == "" && slices.Equal(t.ACME.Challenges, []string{"http-01"}) {
		d.warnf(ab.DefRange, "HTTP-01 without http_address",
			`Only the http-01 challenge is enabled but the tls block has no http_address, so nothing answers the CA on port 80. Set http_address = ":80" or enable "tls-alpn-01".`)
	}
	return t
}

// TLSCurves are the key exchanges a tls block's curves may list (Caddy's names; nginx calls
// the setting ssl_ecdh_curve), in Go's order of preference, which the list does not change.
var TLSCurves = []string{"x25519mlkem768", "x25519", "secp256r1", "secp384r1", "secp521r1"}

// curves decodes a tls block's curves: a non-empty list of TLSCurves, each once.
func (d *decoder) curves(attr *hcl.Attribute) []string {
	hint := `curves lists the key exchanges to allow, from "` + strings.Join(TLSCurves, `", "`) + `"`
	list, ranges, ok := d.strList(attr, hint+".")
	if !ok {
		return nil
	}
	if len(list) == 0 {
		d.errorf(attr.Expr.Range(), "Empty curves", "%s; remove curves for Go's default order.", hint)
		return nil
	}
	var out []string
	for i, s := range list {
		switch {
		case !slices.Contains(TLSCurves, s):
			d.errorf(ranges[i], "Unknown curve", "%s; got %q.", hint, s)
		case slices.Contains(out, s):
			d.errorf(ranges[i], "Duplicate curve", "%q is listed twice. %s.", s, hint)
		default:
			out = append(out, s)
		}
	}
	return out
}

// certFiles decodes a cert_file/key_file pair; both are required. Files need not exist yet:
// tlsconf loads them.
func (d *decoder) certFiles(c *hcl.BodyContent, at hcl.Range) CertFiles {
	d.required(c, at, "cert_file", "the PEM certificate chain that goes with key_file.")
	d.required(c, at, "key_file", "the PEM private key that goes with cert_file.")
	var f CertFiles
	f.CertFile = d.path(c.Attributes["cert_file"])
	f.KeyFile = d.path(c.Attributes["key_file"])
	return f
}

func (d *decoder) path(attr *hcl.Attribute) string {
	s, ok := d.str(attr, "Write a file path.")
	if ok && s == "" {
		d.errorf(attr.Expr.Range(), "Empty path", "%q needs a file path; relative paths are relative to the working directory.", attr.Name)
	}
	return s
}

func (d *decoder) acme(b *hcl.Block, onDemand bool) *ACME {
	c := d.content(b.Body, acmeSchema)
	a := &ACME{CA: DefaultACMECA, Challenges: slices.Clone(DefaultACMEChallenges)}

	const domainHint = `domains lists the host names to get certificates for, for example ["ws.example.com"]`
	if attr := c.Attributes["domains"]; attr != nil {
		list, ranges, _ := d.strList(attr, domainHint+".")
		for i, s := range list {
			switch {
			case s == "":
				d.errorf(ranges[i], "Invalid domain", "A domain cannot be empty. %s.", domainHint)
			case strings.Contains(s, "*"):
				d.errorf(ranges[i], "Invalid domain",
					"%q: wildcard certificates need the DNS-01 challenge, which wsgate does not support. List the names, or use on_demand { allow = [%q] }.", s, s)
			case strings.ContainsAny(s, "/: \t") || strings.Contains(s, ".."):
				d.errorf(ranges[i], "Invalid domain", "%q is not a host name; write the bare name without scheme, port or path. %s.", s, domainHint)
			default:
				a.Domains = append(a.Domains, s)
			}
		}
	}
	if len(a.Domains) == 0 && !onDemand && !hasErrorAt(d.diags, c.Attributes["domains"]) {
		rng := b.DefRange
		if attr := c.Attributes["domains"]; attr != nil {
			rng = attr.Expr.Range()
		}
		d.errorf(rng, "Missing ACME domains", "%s. It may be empty only with an on_demand block, which decides names at handshake time.", domainHint)
	}

	if attr := c.Attributes["email"]; attr != nil {
		if s, ok := d.str(attr, "Write an email address."); ok {
			if s != "" && !strings.Contains(s, "@") {
				d.errorf(attr.Expr.Range(), "Invalid email", "%q is not an email address; the CA sends expiry notices there. Leave it out to register without one.", s)
			}
			a.Email = s
		}
	}
	if v, ok := d.url(c.Attributes["ca"], "ca is the ACME directory URL, for example "+strconv.Quote(DefaultACMECA)+" (the default)"); ok {
		a.CA = v
	}
	if s, ok := d.str(c.Attributes["ca_root"], "Write a PEM file path, or \"\" for the system roots."); ok {
		a.CARoot = s
	}
	if attr := c.Attributes["storage"]; attr != nil {
		if s := d.path(attr); s != "" {
			a.Storage = s
		}
	} else {
		dir, err := DefaultACMEStorage()
		if err != nil {
			d.errorf(b.DefRange, "No certificate storage directory",
				"Cannot find the default storage directory ($XDG_DATA_HOME/wsgate/certs or ~/.local/share/wsgate/certs): %v. Set storage = \"/var/lib/wsgate/certs\" or similar.", err)
		}
		a.Storage = dir
	}

	const chHint = `challenges is a non-empty list of "http-01" (needs port 80: see http_address) and "tls-alpn-01" (answered on the TLS listener itself)`
	if attr := c.Attributes["challenges"]; attr != nil {
		list, ranges, ok := d.strList(attr, chHint+".")
		if ok {
			a.Challenges = []string{}
			for i, s := range list {
				switch {
				case !slices.Contains(DefaultACMEChallenges, s):
					d.errorf(ranges[i], "Unknown ACME challenge", "%s; got %q.", chHint, s)
				case slices.Contains(a.Challenges, s):
					d.errorf(ranges[i], "Duplicate ACME challenge", "%q is listed twice. %s.", s, chHint)
				default:
					a.Challenges = append(a.Challenges, s)
				}
			}
			if len(list) == 0 {
				d.errorf(attr.Expr.Range(), "No ACME challenges", "%s. Leave it out to enable both.", chHint)
			}
		}
	}
	return a
}

// hasErrorAt says whether an error was already reported for attr's value.
func hasErrorAt(diags hcl.Diagnostics, attr *hcl.Attribute) bool {
	if attr == nil {
		return false
	}
	rng := attr.Expr.Range()
	for _, diag := range diags {
		if diag.Severity == hcl.DiagError && diag.Subject != nil && rng.Overlaps(*diag.Subject) {
			return true
		}
	}
	return false
}

// url decodes an absolute http(s) URL.
func (d *decoder) url(attr *hcl.Attribute, hint string) (string, bool) {
	s, ok := d.str(attr, hint+".")
	if !ok {
		return "", false
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		d.errorf(attr.Expr.Range(), "Invalid URL", "%q: %v. %s.", s, unwrapURLError(err), hint)
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		d.errorf(attr.Expr.Range(), "Invalid URL", "%q is not an absolute http:// or https:// URL. %s.", s, hint)
	default:
		return s, true
	}
	return "", false
}

func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

func (d *decoder) onDemand(b *hcl.Block) *OnDemand {
	c := d.content(b.Body, onDemandSchema)
	o := &OnDemand{}
	if v, ok := d.url(c.Attributes["ask"], `ask is a URL that answers GET ?domain=NAME with 200 to approve NAME, for example "http://127.0.0.1:8080/check"`); ok {
		o.Ask = v
	}
	const allowHint = `allow lists host name patterns to approve without asking, for example ["*.example.com", "ws.example.org"]`
	if attr := c.Attributes["allow"]; attr != nil {
		list, ranges, _ := d.strList(attr, allowHint+".")
		for i, s := range list {
			if s == "" || strings.ContainsAny(s, "/: \t") {
				d.errorf(ranges[i], "Invalid host pattern", "%q is not a host name pattern. %s.", s, allowHint)
				continue
			}
			o.Allow = append(o.Allow, s)
		}
	}
	if c.Attributes["ask"] == nil && c.Attributes["allow"] == nil {
		d.errorf(b.DefRange, "Unrestricted on-demand TLS",
			"An on_demand block needs ask, allow or both; otherwise anyone could make the gateway request certificates for any name, exhausting the CA's rate limits. %s.", allowHint)
	}
	return o
}

func (d *decoder) route(b *hcl.Block, top limitsPatch, listeners map[string]*Listener, listenerNames []string) *Route {
	r := &Route{Path: b.Labels[0], ForwardAuth: true}
	if !strings.HasPrefix(r.Path, "/") || strings.ContainsAny(r.Path, "?# \t\r\n") {
		d.errorf(b.LabelRanges[0], "Invalid route path",
			`%q is not a URL path. A route path starts with "/" and has no query or fragment: "/chat/" matches /chat/ and everything under it, "/chat" only /chat.`, r.Path)
	}
	c := d.content(b.Body, routeSchema)

	d.required(c, b.DefRange, "backend", `the backend's WebSocket URL, for example "ws://127.0.0.1:8001/ws".`)
	if attr := c.Attributes["backend"]; attr != nil {
		r.Backend = d.backend(attr)
	}
	if v, ok := d.boolean(c.Attributes["strip_prefix"]); ok {
		r.StripPrefix = v
	}
	if attr := c.Attributes["subprotocols"]; attr != nil {
		const hint = `subprotocols is the list of Sec-WebSocket-Protocol values to forward, for example ["chat.v1", "chat.v2"]`
		list, ranges, _ := d.strList(attr, hint+".")
		r.Subprotocols = []string{}
		for i, s := range list {
			if !isToken(s) {
				d.errorf(ranges[i], "Invalid subprotocol", "%q is not an HTTP token (RFC 6455 section 4.1: no spaces, commas or separators). %s.", s, hint)
				continue
			}
			r.Subprotocols = append(r.Subprotocols, s)
		}
	}
	if attr := c.Attributes["allowed_origins"]; attr != nil {
		const hint = `allowed_origins lists full origins such as ["https://example.com", "http://localhost:3000"], or ["*"] for any`
		list, ranges, _ := d.strList(attr, hint+".")
		r.AllowedOrigins = []string{}
		for i, s := range list {
			if s != "*" {
				u, err := url.Parse(s)
				if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
					d.errorf(ranges[i], "Invalid origin", "%q is not an origin (scheme://host[:port], no path). %s.", s, hint)
					continue
				}
				s = strings.ToLower(u.Scheme + "://" + u.Host)
			}
			r.AllowedOrigins = append(r.AllowedOrigins, s)
		}
	}
	if v, ok := d.boolean(c.Attributes["validate_utf8"]); ok {
		r.ValidateUTF8 = v
	}
	if attr := c.Attributes["listen"]; attr != nil {
		known := "No listeners are declared."
		if len(listenerNames) > 0 {
			q := make([]string, len(listenerNames))
			for i, n := range listenerNames {
				q[i] = strconv.Quote(n)
			}
			known = "Declared listeners: " + strings.Join(q, ", ") + "."
		}
		list, ranges, _ := d.strList(attr, "listen lists listener names, for example [\"public\"]. "+known)
		r.Listen = []string{}
		for i, s := range list {
			if listeners[s] == nil {
				d.errorf(ranges[i], "Unknown listener", "This route names listener %q, which is not declared. %s", s, known)
				continue
			}
			if !slices.Contains(r.Listen, s) {
				r.Listen = append(r.Listen, s)
			}
		}
	}
	if v, ok := d.boolean(c.Attributes["tls_only"]); ok {
		r.TLSOnly = v
		if v && !d.reachableOverTLS(r, listeners) {
			d.warnf(c.Attributes["tls_only"].Expr.Range(), "Route is unreachable",
				"This route is tls_only but none of its listeners has a tls block, so every handshake gets 403.")
		}
	}
	if v, ok := d.boolean(c.Attributes["forward_auth"]); ok {
		r.ForwardAuth = v
	}
	var own limitsPatch
	if lb := d.single(c.Blocks, "limits"); lb != nil {
		own = d.limits(lb.Body)
	}
	r.Limits = resolveLimits(top, own)
	return r
}

func (d *decoder) reachableOverTLS(r *Route, listeners map[string]*Listener) bool {
	if len(listeners) == 0 {
		return true // nothing to judge by (a snippet, or listeners in error)
	}
	for name, l := range listeners {
		if (len(r.Listen) == 0 || slices.Contains(r.Listen, name)) && l.TLS != nil {
			return true
		}
	}
	return false
}

func (d *decoder) backend(attr *hcl.Attribute) *url.URL {
	const hint = `backend is the backend's WebSocket URL: ws://host:port/path, for example "ws://127.0.0.1:8001/ws"`
	s, ok := d.str(attr, hint+".")
	if !ok {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil {
		d.errorf(attr.Expr.Range(), "Invalid backend URL", "%q: %v. %s.", s, unwrapURLError(err), hint)
		return nil
	}
	switch strings.ToLower(u.Scheme) {
	case "ws":
	case "wss":
		d.errorf(attr.Expr.Range(), "Unsupported backend scheme",
			"%q: wss:// backends are not supported yet; the gateway dials backends over plain TCP. Use ws:// on a trusted network (TLS is terminated at the gateway's listener).", s)
		return nil
	case "http", "https":
		d.errorf(attr.Expr.Range(), "Unsupported backend scheme",
			"%q: the gateway speaks WebSocket to the backend, so the URL starts with ws://, for example %q.", s, "ws://"+u.Host+u.EscapedPath())
		return nil
	default:
		d.errorf(attr.Expr.Range(), "Unsupported backend scheme", "%q is not a ws:// URL. %s.", s, hint)
		return nil
	}
	if u.Host == "" || u.Hostname() == "" {
		d.errorf(attr.Expr.Range(), "Invalid backend URL", "%q has no host. %s.", s, hint)
		return nil
	}
	if u.User != nil || u.Fragment != "" {
		d.errorf(attr.Expr.Range(), "Invalid backend URL", "%q: a backend URL has no user info or fragment. %s.", s, hint)
		return nil
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			d.errorf(attr.Expr.Range(), "Invalid backend URL", "%q: port %q is not a number from 1 to 65535. %s.", s, p, hint)
			return nil
		}
	}
	u.Scheme = "ws"
	return u
}

// isToken reports whether s is an RFC 7230 token, as RFC 6455 requires of subprotocol names.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return true
}
