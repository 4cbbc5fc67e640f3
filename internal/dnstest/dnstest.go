// Package dnstest is a small authoritative DNS server for tests: the
// "original resolver" of a lab host, or the upstream of a unit test.
package dnstest

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Server answers A queries for its records (names without the final dot,
// lowercase) and NXDOMAIN for every other name, over UDP and TCP.
type Server struct {
	records map[string]netip.Addr
	udp     *net.UDPConn
	tcp     *net.TCPListener
	wg      sync.WaitGroup
	// Queries counts the queries answered.
	Queries atomic.Int64
}

// Listen serves on addr ("127.0.0.1:0", "203.0.113.53:53").
func Listen(addr string, records map[string]netip.Addr) (*Server, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	// UDP and TCP share one port. With port 0 the port the kernel picked
	// for UDP may be taken for TCP: try a few.
	var udp *net.UDPConn
	var tcp *net.TCPListener
	for try := 0; ; try++ {
		udp, err = net.ListenUDP("udp", ua)
		if err != nil {
			return nil, err
		}
		ta := &net.TCPAddr{IP: ua.IP, Port: udp.LocalAddr().(*net.UDPAddr).Port}
		tcp, err = net.ListenTCP("tcp", ta)
		if err == nil {
			break
		}
		udp.Close()
		if ua.Port != 0 || try == 20 {
			return nil, err
		}
	}
	s := &Server{records: records, udp: udp, tcp: tcp}
	s.wg.Add(2)
	go s.serveUDP()
	go s.serveTCP()
	return s, nil
}

// Addr is the UDP (and TCP) address.
func (s *Server) Addr() netip.AddrPort { return s.udp.LocalAddr().(*net.UDPAddr).AddrPort() }

// Close stops the server.
func (s *Server) Close() {
	s.udp.Close()
	s.tcp.Close()
	s.wg.Wait()
}

func (s *Server) serveUDP() {
	defer s.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, src, err := s.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if resp := s.answer(buf[:n]); resp != nil {
			s.udp.WriteToUDPAddrPort(resp, src)
		}
	}
}

func (s *Server) serveTCP() {
	defer s.wg.Done()
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			var l [2]byte
			if _, err := io.ReadFull(c, l[:]); err != nil {
				return
			}
			msg := make([]byte, binary.BigEndian.Uint16(l[:]))
			if _, err := io.ReadFull(c, msg); err != nil {
				return
			}
			resp := s.answer(msg)
			if resp == nil {
				return
			}
			out := binary.BigEndian.AppendUint16(nil, uint16(len(resp)))
			c.Write(append(out, resp...))
		}()
	}
}

func (s *Server) answer(msg []byte) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil || h.Response {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	s.Queries.Add(1)
	ip, found := s.records[strings.ToLower(strings.TrimSuffix(q.Name.String(), "."))]
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
	if !found {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.StartQuestions()
	b.Question(q)
	b.StartAnswers()
	if found && q.Type == dnsmessage.TypeA {
		b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}, dnsmessage.AResource{A: ip.As4()})
	}
	resp, err := b.Finish()
	if err != nil {
		return nil
	}
	return resp
}
