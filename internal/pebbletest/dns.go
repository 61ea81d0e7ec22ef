package pebbletest

import (
	"fmt"
	"net"
	"sync"

	"github.com/miekg/dns"
)

// dnsServer answers every A question with 127.0.0.1 and every other question (AAAA, TXT,
// CAA, ...) with an empty NOERROR answer. It serves UDP and TCP on the same port: Pebble's
// VA queries its custom resolver over TCP (va.New sets dnsClient.Net = "tcp"), while Go's
// stub resolver and most tools start with UDP.
type dnsServer struct {
	addr string
	udp  *dns.Server
	tcp  *dns.Server
	wg   sync.WaitGroup
}

func answerLoopback(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	for _, q := range req.Question {
		if q.Qtype == dns.TypeA && q.Qclass == dns.ClassINET {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1},
				A:   net.IPv4(127, 0, 0, 1).To4(),
			})
		}
	}
	_ = w.WriteMsg(m)
}

// startDNS binds UDP 127.0.0.1:0, then TCP on the same port (retrying with a fresh port if
// another process took it), and serves until close.
func startDNS() (*dnsServer, error) {
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pebbletest: dns: listen udp: %w", err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err != nil {
			pc.Close()
			lastErr = err
			continue
		}
		h := dns.HandlerFunc(answerLoopback)
		s := &dnsServer{
			addr: pc.LocalAddr().String(),
			udp:  &dns.Server{PacketConn: pc, Handler: h},
			tcp:  &dns.Server{Listener: ln, Handler: h},
		}
		started := make(chan struct{}, 2)
		for _, srv := range []*dns.Server{s.udp, s.tcp} {
			srv.NotifyStartedFunc = func() { started <- struct{}{} }
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				_ = srv.ActivateAndServe()
			}()
		}
		<-started
		<-started
		return s, nil
	}
	return nil, fmt.Errorf("pebbletest: dns: no port free for both udp and tcp: %w", lastErr)
}

func (s *dnsServer) close() {
	_ = s.udp.Shutdown()
	_ = s.tcp.Shutdown()
	s.wg.Wait()
}
