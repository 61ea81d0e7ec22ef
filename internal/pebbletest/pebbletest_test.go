package pebbletest

import (
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/goleak"
)

func TestDirectoryAndDNS(t *testing.T) {
	s := Start(t, 1, 2) // nothing validates here, so the ports need not be real

	c := &http.Client{Transport: &http.Transport{TLSClientConfig: nil}}
	c.Transport.(*http.Transport).TLSClientConfig = tlsTrusting(s)
	defer c.CloseIdleConnections()
	resp, err := c.Get(s.DirectoryURL)
	if err != nil {
		t.Fatalf("GET directory trusting only CARootPEMFile's cert: %v", err)
	}
	var dir map[string]any
	err = json.NewDecoder(resp.Body).Decode(&dir)
	resp.Body.Close()
	if err != nil || dir["newOrder"] == nil {
		t.Fatalf("directory: %v %v", dir, err)
	}

	for _, network := range []string{"udp", "tcp"} {
		cl := &dns.Client{Net: network, Timeout: 2 * time.Second}
		m := new(dns.Msg)
		m.SetQuestion("anything.gw.test.", dns.TypeA)
		in, _, err := cl.Exchange(m, s.DNSAddr)
		if err != nil {
			t.Fatalf("%s A: %v", network, err)
		}
		if len(in.Answer) != 1 || !in.Answer[0].(*dns.A).A.Equal(net.IPv4(127, 0, 0, 1)) {
			t.Fatalf("%s A answer = %v", network, in.Answer)
		}
		m.SetQuestion("anything.gw.test.", dns.TypeAAAA)
		in, _, err = cl.Exchange(m, s.DNSAddr)
		if err != nil || in.Rcode != dns.RcodeSuccess || len(in.Answer) != 0 {
			t.Fatalf("%s AAAA = %v rcode %d err %v; want empty NOERROR", network, in, in.Rcode, err)
		}
	}

	if h := s.IntermediateSPKIHash(); len(h) != 44 {
		t.Fatalf("SPKI hash %q is not base64 SHA-256", h)
	}
	if !s.RootCert().IsCA || s.IntermediateCert().CheckSignatureFrom(s.RootCert()) != nil {
		t.Fatal("intermediate is not signed by root")
	}
	if s.Requests() != 1 || len(s.Orders()) != 0 {
		t.Fatalf("requests %d orders %v; want 1 and none", s.Requests(), s.Orders())
	}
}

func TestOrderIdentifiers(t *testing.T) {
	// {"identifiers":[{"type":"dns","value":"a.test"},{"type":"dns","value":"b.test"}]}
	jws := `{"protected":"x","payload":"eyJpZGVudGlmaWVycyI6W3sidHlwZSI6ImRucyIsInZhbHVlIjoiYS50ZXN0In0seyJ0eXBlIjoiZG5zIiwidmFsdWUiOiJiLnRlc3QifV19","signature":"y"}`
	got := orderIdentifiers([]byte(jws))
	if len(got) != 2 || got[0] != "a.test" || got[1] != "b.test" {
		t.Fatalf("got %v", got)
	}
}

func TestNoLeak(t *testing.T) {
	defer goleak.VerifyNone(t, append(GoleakIgnores(), goleak.IgnoreCurrent())...)
	s := Start(t, 1, 2)
	s.Close()
}

func tlsTrusting(s *Server) *tls.Config { return &tls.Config{RootCAs: s.APIRootPool()} }
