package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// limitField describes one attribute of a limits block. ptr returns the field in a Limits;
// its type selects the decoder: *int64 is a size, *time.Duration a duration, *float64 a rate,
// *int a count, *OnLimit the on_limit keyword.
type limitField struct {
	name string
	ptr  func(*Limits) any
	min  int    // smallest accepted value for counts
	zero string // what 0 means, for hints; "" when 0 is not special
}

// limitFields lists every limits attribute, in the order config.hcl documents them.
var limitFields = []limitField{
	{name: "max_frame_size", ptr: func(l *Limits) any { return &l.MaxFrameSize }, zero: "unlimited"},
	{name: "max_message_size", ptr: func(l *Limits) any { return &l.MaxMessageSize }, zero: "unlimited"},
	{name: "messages_per_second", ptr: func(l *Limits) any { return &l.MessagesPerSecond }, zero: "unlimited"},
	{name: "bytes_per_second", ptr: func(l *Limits) any { return &l.BytesPerSecond }, zero: "unlimited"},
	{name: "burst", ptr: func(l *Limits) any { return &l.Burst }, min: 1},
	{name: "on_limit", ptr: func(l *Limits) any { return &l.OnLimit }},
	{name: "handshake_timeout", ptr: func(l *Limits) any { return &l.HandshakeTimeout }, zero: "no timeout"},
	{name: "idle_timeout", ptr: func(l *Limits) any { return &l.IdleTimeout }, zero: "no timeout"},
	{name: "ping_interval", ptr: func(l *Limits) any { return &l.PingInterval }, zero: "no keepalive pings"},
	{name: "pong_timeout", ptr: func(l *Limits) any { return &l.PongTimeout }, zero: "no timeout"},
	{name: "close_timeout", ptr: func(l *Limits) any { return &l.CloseTimeout }, zero: "no timeout"},
	{name: "write_timeout", ptr: func(l *Limits) any { return &l.WriteTimeout }, zero: "no timeout"},
	{name: "tcp_keepalive", ptr: func(l *Limits) any { return &l.TCPKeepalive }, zero: "off"},
	{name: "dial_timeout", ptr: func(l *Limits) any { return &l.DialTimeout }, zero: "no timeout"},
	{name: "backend_handshake_timeout", ptr: func(l *Limits) any { return &l.BackendHandshakeTimeout }, zero: "no timeout"},
	{name: "max_connections_per_ip", ptr: func(l *Limits) any { return &l.MaxConnectionsPerIP }, zero: "no cap"},
	{name: "handshakes_per_ip_per_second", ptr: func(l *Limits) any { return &l.HandshakesPerIPPerSecond }, zero: "unlimited"},
	{name: "max_connections", ptr: func(l *Limits) any { return &l.MaxConnections }, zero: "no cap"},
	{name: "backend_messages_per_second", ptr: func(l *Limits) any { return &l.BackendMessagesPerSecond }, zero: "off"},
	{name: "backend_bytes_per_second", ptr: func(l *Limits) any { return &l.BackendBytesPerSecond }, zero: "off"},
	{name: "backend_burst", ptr: func(l *Limits) any { return &l.BackendBurst }, min: 1},
}

var limitsSchema = func() *hcl.BodySchema {
	s := &hcl.BodySchema{}
	for _, f := range limitFields {
		s.Attributes = append(s.Attributes, hcl.AttributeSchema{Name: f.name})
	}
	return s
}()

// limitsPatch is a decoded limits block: only the fields in set were written in the file.
type limitsPatch struct {
	vals Limits
	set  map[string]bool
}

// limits decodes a limits block (top-level or a route's).
func (d *decoder) limits(body hcl.Body) limitsPatch {
	p := limitsPatch{set: map[string]bool{}}
	c := d.content(body, limitsSchema)
	for _, f := range limitFields {
		attr := c.Attributes[f.name]
		if attr == nil {
			continue
		}
		ok := false
		switch ptr := f.ptr(&p.vals).(type) {
		case *int64:
			*ptr, ok = d.size(attr, f.zero)
		case *time.Duration:
			*ptr, ok = d.duration(attr, f.zero)
		case *float64:
			*ptr, ok = d.rate(attr, f.zero)
		case *int:
			*ptr, ok = d.integer(attr, f.min, f.zero)
		case *OnLimit:
			*ptr, ok = d.onLimit(attr)
		default:
			panic(fmt.Sprintf("config: limit field %s has unhandled type %T", f.name, ptr))
		}
		p.set[f.name] = ok
	}
	return p
}

func (d *decoder) onLimit(attr *hcl.Attribute) (OnLimit, bool) {
	const hint = `on_limit must be "throttle" (stop reading from the sender until its rate allows) or "close" (close the connection with 1008 policy violation)`
	s, ok := d.str(attr, hint+".")
	if !ok {
		return "", false
	}
	switch v := OnLimit(strings.TrimSpace(s)); v {
	case OnLimitThrottle, OnLimitClose:
		return v, true
	}
	d.errorf(attr.Expr.Range(), "Invalid on_limit value", "%s; got %q.", hint, s)
	return "", false
}

// applyTo overwrites the fields of l that p sets.
func (p limitsPatch) applyTo(l *Limits) {
	for _, f := range limitFields {
		if !p.set[f.name] {
			continue
		}
		switch dst := f.ptr(l).(type) {
		case *int64:
			*dst = *f.ptr(&p.vals).(*int64)
		case *time.Duration:
			*dst = *f.ptr(&p.vals).(*time.Duration)
		case *float64:
			*dst = *f.ptr(&p.vals).(*float64)
		case *int:
			*dst = *f.ptr(&p.vals).(*int)
		case *OnLimit:
			*dst = *f.ptr(&p.vals).(*OnLimit)
		}
	}
}

// resolveLimits layers the patches over DefaultLimits in order. BackendBurst follows Burst
// unless some patch sets backend_burst.
func resolveLimits(patches ...limitsPatch) Limits {
	l := DefaultLimits()
	backendBurstSet := false
	for _, p := range patches {
		p.applyTo(&l)
		backendBurstSet = backendBurstSet || p.set["backend_burst"]
	}
	if !backendBurstSet {
		l.BackendBurst = l.Burst
	}
	return l
}
