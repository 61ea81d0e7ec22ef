package tlsconf

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/wsgate/wsgate/config"
)

// pollInterval is how often certificate files are stat'ed for changes (tests shorten it).
var pollInterval = time.Second

// fileCerts serves certificates loaded from files. The set is swapped whole, atomically;
// a handshake uses whichever set it loaded, so a reload never touches open connections.
type fileCerts struct {
	set atomic.Pointer[certSet]
	// failed is the file state of the last reload that failed (guarded by Manager.mu), so a
	// broken file is reported once, not on every poll, and retried when it changes again.
	failed []fileStamp
}

// certSet is an immutable, loaded list of certificate entries.
type certSet struct {
	entries  []*certEntry
	exact    map[string]*tls.Certificate // lower-case DNS name -> first entry with it
	wildcard map[string]*tls.Certificate // "*.example.com" -> first entry with it
	stamps   []fileStamp                 // cert, key, cert, key, ... as read
}

type certEntry struct {
	files config.CertFiles
	cert  *tls.Certificate // Leaf set
	name  string           // first DNS SAN or CN, for Expiry and logs
}

// fileStamp identifies a file's content cheaply: a rewrite changes mtime or size.
type fileStamp struct {
	mod  time.Time
	size int64
	err  bool // stat failed
}

func stamp(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{err: true}
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size()}
}

func stampsOf(list []config.CertFiles) []fileStamp {
	out := make([]fileStamp, 0, 2*len(list))
	for _, f := range list {
		out = append(out, stamp(f.CertFile), stamp(f.KeyFile))
	}
	return out
}

func sameStamps(a, b []fileStamp) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].mod.Equal(b[i].mod) || a[i].size != b[i].size || a[i].err != b[i].err {
			return false
		}
	}
	return true
}

// loadCertSet reads every pair. Stamps are taken before reading, so a write racing the read
// shows up as a change at the next poll and the files are read again.
func loadCertSet(list []config.CertFiles) (*certSet, error) {
	s := &certSet{
		exact:    make(map[string]*tls.Certificate),
		wildcard: make(map[string]*tls.Certificate),
		stamps:   stampsOf(list),
	}
	for _, f := range list {
		e, err := loadEntry(f)
		if err != nil {
			return nil, err
		}
		s.entries = append(s.entries, e)
		names := e.cert.Leaf.DNSNames
		if len(names) == 0 && e.cert.Leaf.Subject.CommonName != "" {
			names = []string{e.cert.Leaf.Subject.CommonName}
		}
		for _, n := range names {
			n = strings.ToLower(strings.TrimSuffix(n, "."))
			m := s.exact
			if strings.HasPrefix(n, "*.") {
				m = s.wildcard
			}
			if _, dup := m[n]; !dup {
				m[n] = e.cert
			}
		}
	}
	return s, nil
}

func loadEntry(f config.CertFiles) (*certEntry, error) {
	if f.CertFile == "" || f.KeyFile == "" {
		return nil, errors.New("tlsconf: a certificate entry needs both cert_file and key_file")
	}
	certPEM, err := os.ReadFile(f.CertFile)
	if err != nil {
		return nil, fmt.Errorf("tlsconf: reading cert_file: %w", err)
	}
	keyPEM, err := os.ReadFile(f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tlsconf: reading key_file: %w", err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tlsconf: cert_file %s with key_file %s: %w", f.CertFile, f.KeyFile, err)
	}
	leaf := c.Leaf // set by X509KeyPair since Go 1.23
	name := leaf.Subject.CommonName
	if len(leaf.DNSNames) > 0 {
		name = leaf.DNSNames[0]
	}
	if name == "" {
		name = f.CertFile
	}
	return &certEntry{files: f, cert: &c, name: strings.ToLower(name)}, nil
}

// pick chooses by SNI: exact name, then a wildcard covering one label, then the first entry
// (also for a ClientHello without SNI).
func (s *certSet) pick(serverName string) *tls.Certificate {
	name := strings.ToLower(strings.TrimSuffix(serverName, "."))
	if c, ok := s.exact[name]; ok {
		return c
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		if c, ok := s.wildcard["*"+name[i:]]; ok {
			return c
		}
	}
	return s.entries[0].cert
}

func (f *fileCerts) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return f.set.Load().pick(hello.ServerName), nil
}

// watchFiles polls the files' mtime and size and reloads the whole set when any changed.
func (m *Manager) watchFiles() {
	defer m.wg.Done()
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
			m.checkFiles()
		}
	}
}

func (m *Manager) checkFiles() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx.Err() != nil {
		return
	}
	list := m.cur.Certificates
	now := stampsOf(list)
	if sameStamps(now, m.files.set.Load().stamps) || sameStamps(now, m.files.failed) {
		return
	}
	set, err := loadCertSet(list)
	if err != nil {
		m.files.failed = now
		m.log.Error("tls: certificate files changed but cannot be loaded; keeping the previous certificates",
			"error", err)
		return
	}
	m.files.set.Store(set)
	m.files.failed = nil
	m.logLoaded(set)
}

func (m *Manager) logLoaded(s *certSet) {
	for _, e := range s.entries {
		m.log.Info("tls: certificate loaded", "name", e.name, "cert_file", e.files.CertFile,
			"not_after", e.cert.Leaf.NotAfter)
		if time.Now().After(e.cert.Leaf.NotAfter) {
			m.log.Warn("tls: certificate has expired", "name", e.name, "cert_file", e.files.CertFile,
				"not_after", e.cert.Leaf.NotAfter)
		}
	}
}
