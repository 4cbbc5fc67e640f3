package coordinator

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// stunServerList is stunServers with the alternate address, as netcheck and
// newer agents read it.
func (s *Server) stunServerList(r *http.Request) []control.STUNServer {
	list := []control.STUNServer{}
	for _, addr := range s.stunServers(r) {
		list = append(list, control.STUNServer{Addr: addr, Alternate: s.stunAlternate(r)})
	}
	return list
}

// stunAlternate is the alternate STUN address for a client that reached us
// via r, empty without one. An alternate on the primary's IP is advertised
// under the primary's host; one with its own IP under that IP, since the
// public host names only the primary.
func (s *Server) stunAlternate(r *http.Request) string {
	if s.stun == nil {
		return ""
	}
	alt := s.stun.AlternateAddr()
	if alt == nil {
		return ""
	}
	host := s.stunHost(r)
	if s.stun.HasAlternateIP() {
		host = alt.IP.String()
	}
	if host == "" {
		return ""
	}
	return net.JoinHostPort(host, strconv.Itoa(alt.Port))
}

// handleNetcheckInfo serves GET /api/v1/netcheck-info without
// authentication: `meshvpn netcheck` runs before a node has joined.
func (s *Server) handleNetcheckInfo(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	writeJSON(w, http.StatusOK, control.NetcheckInfo{STUN: s.stunServerList(r), TURN: s.turnServerList(r), STUN6: s.stunServerList6()})
}

// turnServerList is the host:port of every TURN server reachable over UDP,
// for netcheck's latency report (credentials are not needed for that).
func (s *Server) turnServerList(r *http.Request) []string {
	var out []string
	if s.relays == nil {
		return out
	}
	host := s.stunHost(r)
	for _, rl := range s.relays.forNode(0, host, s.embeddedPorts(), time.Now()) {
		scheme, rest, _ := strings.Cut(rl.URL, ":")
		hostport, query, _ := strings.Cut(rest, "?")
		if scheme != "turn" || query == "transport=tcp" {
			continue
		}
		// netcheck pings TURN from its IPv4 socket: not the IPv6 entry
		// forNode adds for IPv6-only agents.
		if h, _, err := net.SplitHostPort(hostport); err == nil && h == s.relays.host6 && h != host {
			continue
		}
		if _, _, err := net.SplitHostPort(hostport); err != nil {
			hostport = net.JoinHostPort(hostport, "3478")
		}
		out = append(out, hostport)
	}
	return out
}
