package meshdns

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// FuzzHandle: any bytes from a client give no panic, and every answer the
// resolver makes is a DNS response with the request's ID.
func FuzzHandle(f *testing.F) {
	for _, name := range []string{"server.mesh.internal.", "x.server.mesh.internal.", "2.0.64.100.in-addr.arpa.", "example.com.", "mesh.internal."} {
		n, _ := dnsmessage.NewName(name)
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 42})
		b.StartQuestions()
		b.Question(dnsmessage.Question{Name: n, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
		msg, _ := b.Finish()
		f.Add(msg)
	}
	f.Add([]byte{0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0})
	r := &Resolver{log: slog.New(slog.DiscardHandler), ctx: context.Background()}
	// Forwarding fails at once: no network in a fuzz run.
	r.fwd = forwarder{upstreams: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:53")},
		dial: func(context.Context, string, string) (net.Conn, error) { return nil, errors.New("no network") }}
	r.names.Store(newTable("mesh.internal", []Record{{Name: "server", IP: netip.MustParseAddr("100.64.0.2"), IP6: netip.MustParseAddr("fd12:3456:789a::6440:2")}}))
	f.Fuzz(func(t *testing.T, msg []byte) {
		for _, network := range []string{"udp", "tcp"} {
			resp := r.handle(network, msg)
			if resp == nil {
				continue
			}
			var p dnsmessage.Parser
			h, err := p.Start(resp)
			if err != nil || !h.Response {
				t.Fatalf("answer %x to %x is not a response: %v", resp, msg, err)
			}
			var q dnsmessage.Parser
			if qh, err := q.Start(msg); err == nil && qh.ID != h.ID {
				t.Fatalf("answer ID %d, request ID %d", h.ID, qh.ID)
			}
		}
	})
}
