package meshdns

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
)

// ttl of every answer the resolver makes itself: none, so a rename or a
// removal is seen at once, also through caching stubs (systemd-resolved).
// A lookup costs a round trip over loopback.
const ttl = 0

// ednsSize is the UDP payload size announced in local answers.
const ednsSize = 1232

// query is what the resolver needs of a request.
type query struct {
	hdr  dnsmessage.Header
	q    dnsmessage.Question
	edns bool
}

var errNotQuery = errors.New("not a query")

// parseQuery reads a request. A message that is not a request at all
// (a response, or no header) gives errNotQuery and is dropped; a request
// that is malformed gives a query with a zero question and an error, to be
// answered FORMERR.
func parseQuery(msg []byte) (query, error) {
	var p dnsmessage.Parser
	hdr, err := p.Start(msg)
	if err != nil || hdr.Response {
		return query{}, errNotQuery
	}
	qr := query{hdr: hdr}
	qs, err := p.AllQuestions()
	if err != nil {
		return qr, err
	}
	if len(qs) != 1 {
		return qr, errors.New("want exactly one question")
	}
	qr.q = qs[0]
	if p.SkipAllAnswers() == nil && p.SkipAllAuthorities() == nil {
		for {
			h, err := p.AdditionalHeader()
			if err != nil {
				break
			}
			if h.Type == dnsmessage.TypeOPT {
				qr.edns = true
			}
			if p.SkipAdditional() != nil {
				break
			}
		}
	}
	return qr, nil
}

// local is a locally made answer: nil when the question is not ours.
type local struct {
	rcode dnsmessage.RCode
	a     netip.Addr // an A or AAAA record
	ptr   string     // a PTR target, fully qualified without the dot
	soa   bool       // SOA of the mesh domain in the answer (a SOA query)
	auth  bool       // SOA in the authority section (negative answers)
}

// lookup answers a question about the mesh's names or overlay addresses,
// and returns nil for any other name (forwarded). Only names inside the
// mesh domain and reverse names of overlay addresses are ever answered
// here: a node's name is one label, so no node can claim a name outside.
func (t *table) lookup(q dnsmessage.Question) *local {
	name := strings.ToLower(strings.TrimSuffix(q.Name.String(), "."))
	if ip, ok := reverseName(name); ok {
		if !t.overlay(ip) {
			return nil
		}
		target, found := t.byIP[ip]
		switch {
		case !found:
			return &local{rcode: dnsmessage.RCodeNameError, auth: true}
		case q.Type == dnsmessage.TypePTR || q.Type == dnsmessage.TypeALL:
			return &local{ptr: FQDN(target, t.domain)}
		default:
			return &local{auth: true}
		}
	}
	if name == t.domain {
		if q.Type == dnsmessage.TypeSOA {
			return &local{soa: true}
		}
		return &local{auth: true}
	}
	label, ok := strings.CutSuffix(name, "."+t.domain)
	if !ok {
		return nil
	}
	rec, found := t.byName[label] // a dotted label is never found
	switch {
	case !found:
		return &local{rcode: dnsmessage.RCodeNameError, auth: true}
	case q.Type == dnsmessage.TypeA || q.Type == dnsmessage.TypeALL:
		return &local{a: rec.IP}
	case q.Type == dnsmessage.TypeAAAA && rec.IP6.IsValid():
		return &local{a: rec.IP6}
	default:
		// The rest (AAAA of a node without IPv6): the name exists,
		// without such records.
		return &local{auth: true}
	}
}

// reverseIPv4 reads "d.c.b.a.in-addr.arpa" as a.b.c.d.
func reverseIPv4(name string) (netip.Addr, bool) {
	rest, ok := strings.CutSuffix(name, ".in-addr.arpa")
	if !ok {
		return netip.Addr{}, false
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 4 {
		return netip.Addr{}, false
	}
	var b [4]byte
	for i, s := range parts {
		n, err := strconv.ParseUint(s, 10, 8)
		if err != nil || (len(s) > 1 && s[0] == '0') {
			return netip.Addr{}, false
		}
		b[3-i] = byte(n)
	}
	return netip.AddrFrom4(b), true
}

// build encodes a local answer to qr.
func (t *table) build(qr query, l *local) ([]byte, error) {
	h := dnsmessage.Header{ID: qr.hdr.ID, Response: true, Authoritative: true,
		RecursionDesired: qr.hdr.RecursionDesired, RecursionAvailable: true, RCode: l.rcode}
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), h)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(qr.q); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	rh := dnsmessage.ResourceHeader{Name: qr.q.Name, Class: dnsmessage.ClassINET, TTL: ttl}
	switch {
	case l.a.Is4():
		if err := b.AResource(rh, dnsmessage.AResource{A: l.a.As4()}); err != nil {
			return nil, err
		}
	case l.a.Is6():
		if err := b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: l.a.As16()}); err != nil {
			return nil, err
		}
	case l.ptr != "":
		target, err := dnsmessage.NewName(l.ptr + ".")
		if err != nil {
			return nil, err
		}
		if err := b.PTRResource(rh, dnsmessage.PTRResource{PTR: target}); err != nil {
			return nil, err
		}
	case l.soa:
		if err := t.soa(&b); err != nil {
			return nil, err
		}
	}
	if err := b.StartAuthorities(); err != nil {
		return nil, err
	}
	if l.auth {
		if err := t.soa(&b); err != nil {
			return nil, err
		}
	}
	if err := b.StartAdditionals(); err != nil {
		return nil, err
	}
	if qr.edns {
		var oh dnsmessage.ResourceHeader
		if err := oh.SetEDNS0(ednsSize, dnsmessage.RCodeSuccess, false); err != nil {
			return nil, err
		}
		if err := b.OPTResource(oh, dnsmessage.OPTResource{}); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

// soa adds the mesh domain's SOA record; its minimum (the negative-caching
// time) is zero for the same reason as ttl.
func (t *table) soa(b *dnsmessage.Builder) error {
	zone, err := dnsmessage.NewName(t.domain + ".")
	if err != nil {
		return err
	}
	ns, err := dnsmessage.NewName("resolver." + t.domain + ".")
	if err != nil {
		return err
	}
	mbox, err := dnsmessage.NewName("hostmaster." + t.domain + ".")
	if err != nil {
		return err
	}
	return b.SOAResource(dnsmessage.ResourceHeader{Name: zone, Class: dnsmessage.ClassINET, TTL: ttl},
		dnsmessage.SOAResource{NS: ns, MBox: mbox, Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, MinTTL: ttl})
}

// errorReply answers qr with rcode alone (FORMERR, SERVFAIL, ...).
func errorReply(qr query, rcode dnsmessage.RCode) ([]byte, error) {
	h := dnsmessage.Header{ID: qr.hdr.ID, Response: true, OpCode: qr.hdr.OpCode,
		RecursionDesired: qr.hdr.RecursionDesired, RecursionAvailable: true, RCode: rcode}
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), h)
	if qr.q.Name.Length > 0 {
		if err := b.StartQuestions(); err != nil {
			return nil, err
		}
		if err := b.Question(qr.q); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}
