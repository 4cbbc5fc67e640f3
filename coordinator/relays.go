package coordinator

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/relay"
)

// relayList is what the coordinator tells one node about relays: the
// embedded server's URLs and the external ones, each with a credential
// minted for that node. Each node gets its own, so this is sent on the
// node's stream rather than through the shared deltas.
type relayList struct {
	secret []byte // embedded server's secret
	cfg    TURNConfig
	ca     string // PEM advertised with turns: URLs
	ttl    time.Duration
	host6  string // Config.PublicIPv6: the embedded server over IPv6 too
}

func newRelayList(cfg TURNConfig, secret []byte) (*relayList, error) {
	l := &relayList{cfg: cfg, secret: secret, ttl: cfg.CredentialTTL}
	if l.ttl <= 0 {
		l.ttl = defaultCredentialTTL
	}
	if l.ttl < 2*time.Minute {
		return nil, fmt.Errorf("turn credential ttl %s: want at least 2m", l.ttl)
	}
	if cfg.CAFile != "" {
		b, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("turn ca file: %w", err)
		}
		if !strings.Contains(string(b), "-----BEGIN CERTIFICATE-----") {
			return nil, fmt.Errorf("turn ca file %s: no PEM certificate in it", cfg.CAFile)
		}
		l.ca = string(b)
	}
	for _, u := range cfg.URLs {
		if err := checkTURNURL(u); err != nil {
			return nil, err
		}
	}
	if len(cfg.URLs) > 0 && cfg.Secret == "" && (cfg.Username == "" || cfg.Password == "") {
		return nil, fmt.Errorf("external turn servers need --turn-secret or --turn-username and --turn-password")
	}
	return l, nil
}

// checkTURNURL accepts turn:/turns: URIs with a host, an optional port and
// an optional ?transport=udp|tcp.
func checkTURNURL(u string) error {
	scheme, rest, ok := strings.Cut(u, ":")
	if !ok || (scheme != "turn" && scheme != "turns") {
		return fmt.Errorf("turn url %q: want turn:HOST[:PORT][?transport=udp|tcp] or turns:HOST[:PORT][?transport=tcp]", u)
	}
	hostport, query, _ := strings.Cut(rest, "?")
	if hostport == "" || strings.Contains(hostport, "/") || strings.Contains(hostport, "@") {
		return fmt.Errorf("turn url %q: bad host", u)
	}
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		if h == "" {
			return fmt.Errorf("turn url %q: empty host", u)
		}
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("turn url %q: bad port", u)
		}
	}
	switch query {
	case "", "transport=udp", "transport=tcp":
	default:
		return fmt.Errorf("turn url %q: the only query allowed is transport=udp or transport=tcp", u)
	}
	return nil
}

// embeddedPorts are where agents reach the embedded relay: its UDP (and
// TCP) port and its TLS port, and its UDP port over IPv6 (stun6.go); 0
// for none.
type embeddedPorts struct{ udp, tls, udp6 int }

func (s *Server) embeddedPorts() embeddedPorts {
	if s.turn == nil {
		return embeddedPorts{}
	}
	return embeddedPorts{s.turn.UDPPort(), s.turn.TLSPort(), s.turnUDP6Port()}
}

// forNode mints the relay list for node; host is where the node reaches
// the embedded server.
func (l *relayList) forNode(node uint64, host string, t embeddedPorts, now time.Time) []control.Relay {
	exp := now.Add(l.ttl)
	out := []control.Relay{}
	if t.udp != 0 && host != "" {
		user, pass := relay.MintCredential(l.secret, node, exp)
		hp := net.JoinHostPort(host, strconv.Itoa(t.udp))
		out = append(out,
			control.Relay{URL: "turn:" + hp + "?transport=udp", Username: user, Password: pass, Expires: exp},
			control.Relay{URL: "turn:" + hp + "?transport=tcp", Username: user, Password: pass, Expires: exp})
		if t.tls != 0 {
			out = append(out, control.Relay{URL: "turns:" + net.JoinHostPort(host, strconv.Itoa(t.tls)) + "?transport=tcp",
				Username: user, Password: pass, Expires: exp, CA: l.ca})
		}
		// An IPv6-only host cannot reach host when it names IPv4: it gets
		// the UDP server at the public IPv6 address, after the others so
		// that dual-stack agents keep their first choice.
		if l.host6 != "" && l.host6 != host {
			if t.udp6 != 0 {
				out = append(out, control.Relay{URL: "turn:" + net.JoinHostPort(l.host6, strconv.Itoa(t.udp6)) + "?transport=udp",
					Username: user, Password: pass, Expires: exp})
			}
		}
	}
	for _, u := range l.cfg.URLs {
		r := control.Relay{URL: u, CA: l.ca}
		if l.cfg.Secret != "" {
			r.Username, r.Password = relay.MintCredential([]byte(l.cfg.Secret), node, exp)
			r.Expires = exp
		} else {
			r.Username, r.Password = l.cfg.Username, l.cfg.Password
		}
		out = append(out, r)
	}
	return out
}

// relayDue is a stream's schedule of relay messages: when the next is
// due, and the generation of the peer relay set its node was last sent.
type relayDue struct {
	at  time.Time
	gen uint64
}

// relayUpdate returns the relay message for node when one is due at now:
// the stream's writer sends the first right after the netmap, then fresh
// credentials at half their lifetime, and a new list when the peer relays
// changed. Each node gets its own credentials, so this is not part of the
// shared deltas.
func (s *Server) relayUpdate(node uint64, host string, due *relayDue, now time.Time) (frame []byte) {
	_, gen := s.peers.list(now)
	if now.Before(due.at) && gen == due.gen {
		return nil
	}
	due.at, due.gen = now.Add(s.relays.ttl/2), gen
	if gen == 0 && s.turn == nil && len(s.relays.cfg.URLs) == 0 {
		return nil // no relay at all, ever
	}
	list := s.relays.forNode(node, host, s.embeddedPorts(), now)
	list = append(list, s.peerRelayList(node, now, now.Add(s.relays.ttl))...)
	frame, err := json.Marshal(control.Message{Type: control.MsgDelta, Delta: &control.Delta{Relays: &list}})
	if err != nil {
		s.log.Error("encode relays", "err", err)
		return nil
	}
	return frame
}
