// Package httphdr holds the small HTTP header helpers the client and backend handshakes share.
package httphdr

import (
	"net/http"
	"strings"
)

// HasToken reports whether the comma-separated header name contains token, compared
// case-insensitively (RFC 7230 section 7; RFC 6455 section 4.2.1 items 3 and 4).
func HasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for v != "" {
			var t string
			t, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// Tokens returns the trimmed, non-empty items of every value of a comma-separated header.
func Tokens(h http.Header, name string) []string {
	var out []string
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				out = append(out, t)
			}
		}
	}
	return out
}
