package dnstest

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Answer is what Query got back.
type Answer struct {
	RCode dnsmessage.RCode
	A     []netip.Addr
	AAAA  []netip.Addr
	PTR   []string
	// NS counts authority records (the SOA of a negative answer).
	NS  int
	Raw []byte
}

// Query asks server one question over network ("udp" or "tcp").
func Query(network string, server netip.AddrPort, name string, typ dnsmessage.Type) (Answer, error) {
	n, err := dnsmessage.NewName(name)
	if err != nil {
		return Answer{}, err
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 0x4d56, RecursionDesired: true})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: n, Type: typ, Class: dnsmessage.ClassINET})
	msg, err := b.Finish()
	if err != nil {
		return Answer{}, err
	}
	raw, err := Exchange(network, server, msg)
	if err != nil {
		return Answer{}, err
	}
	return Parse(raw)
}

// Exchange sends msg and returns the raw answer, within 3 s.
func Exchange(network string, server netip.AddrPort, msg []byte) ([]byte, error) {
	c, err := net.DialTimeout(network, server.String(), 3*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if network == "tcp" {
		out := binary.BigEndian.AppendUint16(nil, uint16(len(msg)))
		if _, err := c.Write(append(out, msg...)); err != nil {
			return nil, err
		}
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return nil, err
		}
		resp := make([]byte, binary.BigEndian.Uint16(l[:]))
		_, err := io.ReadFull(c, resp)
		return resp, err
	}
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// Parse reads an answer.
func Parse(raw []byte) (Answer, error) {
	var p dnsmessage.Parser
	h, err := p.Start(raw)
	if err != nil {
		return Answer{}, err
	}
	if !h.Response {
		return Answer{}, errors.New("not a response")
	}
	a := Answer{RCode: h.RCode, Raw: raw}
	if err := p.SkipAllQuestions(); err != nil {
		return a, err
	}
	for {
		rh, err := p.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			return a, err
		}
		switch rh.Type {
		case dnsmessage.TypeA:
			r, err := p.AResource()
			if err != nil {
				return a, err
			}
			a.A = append(a.A, netip.AddrFrom4(r.A))
		case dnsmessage.TypeAAAA:
			r, err := p.AAAAResource()
			if err != nil {
				return a, err
			}
			a.AAAA = append(a.AAAA, netip.AddrFrom16(r.AAAA))
		case dnsmessage.TypePTR:
			r, err := p.PTRResource()
			if err != nil {
				return a, err
			}
			a.PTR = append(a.PTR, r.PTR.String())
		default:
			if err := p.SkipAnswer(); err != nil {
				return a, err
			}
		}
	}
	auths, err := p.AllAuthorities()
	if err != nil {
		return a, err
	}
	a.NS = len(auths)
	return a, nil
}
