package gateway

import (
	"slices"
	"strings"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/proxy"
)

// router finds the route for a request path (DESIGN.md, "Routing"): the longest matching
// prefix wins; a route ending in "/" matches its subtree, one without matches exactly.
type router struct {
	exact   map[string]*config.Route
	subtree []*config.Route // longest path first
	// relay holds each route's relay options, shared by all of its connections.
	relay map[*config.Route]*proxy.Options
}

func newRouter(routes []*config.Route, relayOptions func(*config.Route) *proxy.Options) *router {
	r := &router{exact: make(map[string]*config.Route), relay: make(map[*config.Route]*proxy.Options)}
	for _, rt := range routes {
		r.relay[rt] = relayOptions(rt)
		if strings.HasSuffix(rt.Path, "/") {
			r.subtree = append(r.subtree, rt)
		} else {
			r.exact[rt.Path] = rt
		}
	}
	slices.SortStableFunc(r.subtree, func(a, b *config.Route) int { return len(b.Path) - len(a.Path) })
	return r
}

// match returns the route for path on the named listener, or nil. A route restricted to other
// listeners is invisible here, so a less specific route may match instead.
func (r *router) match(path, listener string) *config.Route {
	if rt := r.exact[path]; rt != nil && onListener(rt, listener) {
		return rt
	}
	for _, rt := range r.subtree {
		if strings.HasPrefix(path, rt.Path) && onListener(rt, listener) {
			return rt
		}
		// "/chat" also reaches the subtree route "/chat/", as nginx's location does.
		if path+"/" == rt.Path && onListener(rt, listener) {
			return rt
		}
	}
	return nil
}

func onListener(rt *config.Route, listener string) bool {
	return len(rt.Listen) == 0 || slices.Contains(rt.Listen, listener)
}

// cleanPath returns the request path as routes see it, the way nginx normalizes a URI before
// it matches locations: runs of "/" merged, "." segments dropped and ".." segments resolved,
// a trailing "/" kept (also after a final "." or ".."). ok is false if a ".." would climb
// above the root (a 400). Without it "/public/../admin/x" would match a route "/public/" and
// reach the backend as it is, where "/admin/x" may be a route this listener must not serve.
// A path that does not start with "/" ("*", or none) is returned as it is.
func cleanPath(p string) (clean string, ok bool) {
	if !strings.HasPrefix(p, "/") || !strings.Contains(p, "//") && !strings.Contains(p, "/./") &&
		!strings.Contains(p, "/../") && !strings.HasSuffix(p, "/.") && !strings.HasSuffix(p, "/..") {
		return p, true
	}
	segs := make([]string, 0, strings.Count(p, "/"))
	rest := p[1:]
	for {
		seg, more, found := strings.Cut(rest, "/")
		switch seg {
		case "", ".":
		case "..":
			if len(segs) == 0 {
				return "", false
			}
			segs = segs[:len(segs)-1]
		default:
			segs = append(segs, seg)
		}
		if !found {
			break
		}
		rest = more
	}
	clean = "/" + strings.Join(segs, "/")
	if len(segs) > 0 && (strings.HasSuffix(p, "/") || strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..")) {
		clean += "/"
	}
	return clean, true
}

// backendPath maps a request path onto the route's backend path (DESIGN.md, strip_prefix):
// with strip_prefix the route's prefix is removed first; the remainder is appended to the
// backend URL's path.
func backendPath(rt *config.Route, reqPath string) string {
	rest := reqPath
	if rt.StripPrefix {
		rest = strings.TrimPrefix(reqPath, strings.TrimSuffix(rt.Path, "/"))
	}
	base := rt.Backend.Path
	switch {
	case rest == "" || rest == "/" && rt.StripPrefix && base != "":
		if base == "" {
			return "/"
		}
		return base
	case base == "" || base == "/":
		if !strings.HasPrefix(rest, "/") {
			rest = "/" + rest
		}
		return rest
	default:
		if !strings.HasPrefix(rest, "/") {
			rest = "/" + rest
		}
		return strings.TrimSuffix(base, "/") + rest
	}
}
