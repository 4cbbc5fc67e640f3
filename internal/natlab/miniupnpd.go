package natlab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// UPnPMode picks which protocols a lab router's miniupnpd serves.
type UPnPMode int

const (
	// UPnPAndPMP serves UPnP IGD and NAT-PMP/PCP (one switch in miniupnpd).
	UPnPAndPMP UPnPMode = iota
	// PMPOnly serves NAT-PMP only. miniupnpd 2.3.1 has no switch for PCP
	// alone (enable_natpmp serves both on port 5351), so the router drops
	// PCP datagrams, which differ from NAT-PMP in their first byte (the
	// version: 0 for NAT-PMP, 2 for PCP), both ways.
	PMPOnly
	// UPnPOnly serves UPnP IGD only.
	UPnPOnly
)

func (m UPnPMode) String() string {
	switch m {
	case UPnPAndPMP:
		return "upnp+natpmp"
	case PMPOnly:
		return "natpmp"
	case UPnPOnly:
		return "upnp"
	}
	return fmt.Sprintf("UPnPMode(%d)", int(m))
}

// MiniUPnPHTTPPort is where the lab's miniupnpd serves UPnP (its root
// description is http://ROUTER-LAN:5000/rootDesc.xml).
const MiniUPnPHTTPPort = 5000

// MiniUPnPd is a real miniupnpd (Debian miniupnpd-nftables) on a site's
// router.
type MiniUPnPd struct {
	Site *Site
	Mode UPnPMode
	Proc *Proc

	conf, pid string
}

// AddCoturnSTUN adds a public host running coturn as a plain STUN server on
// two addresses, ip1 and ip2: it answers RFC 5780 CHANGE-REQUEST, which is
// how miniupnpd finds out that nothing filters in front of its WAN address.
func (l *Lab) AddCoturnSTUN(name, ip1, ip2 string) (*Host, error) {
	if _, err := exec.LookPath("turnserver"); err != nil {
		return nil, errors.New("natlab: turnserver not found: apt-get install coturn (scripts/deps.sh)")
	}
	h, err := l.AddPublicHost(name, ip1)
	if err != nil {
		return nil, err
	}
	second, err := netip.ParseAddr(ip2)
	if err != nil {
		return nil, fmt.Errorf("natlab: STUN second address: %w", err)
	}
	if err := h.AddAddr(netip.PrefixFrom(second, 24).String()); err != nil {
		return nil, err
	}
	db := filepath.Join(l.Dir, name+"-turndb")
	// -n: Debian's /etc/turnserver.conf, read by default, turns RFC 5780
	// off and logs to syslog.
	if _, err := h.Start("turnserver", "-n", "--stun-only", "--no-cli", "--no-tls", "--no-dtls",
		"--listening-ip="+ip1, "--listening-ip="+ip2, "--listening-port=3478",
		"--userdb="+db, "--pidfile="+filepath.Join(l.Dir, name+"-turn.pid"), "--log-file=stdout", "--simple-log"); err != nil {
		return nil, err
	}
	return h, nil
}

// StartMiniUPnPd runs miniupnpd on the site's router in the given mode. The
// router's own NAT (its Kind, e.g. Symmetric) stays as it is; miniupnpd adds
// a DNAT rule per mapping. stun must be a host made by AddCoturnSTUN:
// miniupnpd refuses a WAN address in a reserved range (all lab addresses
// are) unless a STUN check shows it reachable. It returns once miniupnpd
// says port forwarding is enabled.
func (s *Site) StartMiniUPnPd(ctx context.Context, stun *Host, mode UPnPMode) (*MiniUPnPd, error) {
	if s.Router == nil {
		return nil, errors.New("natlab: miniupnpd needs a site with a router")
	}
	if _, err := exec.LookPath("miniupnpd"); err != nil {
		return nil, errors.New("natlab: miniupnpd not found: apt-get install miniupnpd-nftables (scripts/deps.sh)")
	}
	r := s.Router
	l := s.lab
	// The nftables structure miniupnpd expects (Debian's nft_init.sh needs a
	// helper file it does not ship). Policy accept: the natlab table's own
	// forward chain is the firewall.
	nft := `table inet filter {
	chain forward { type filter hook forward priority 0; policy accept; jump miniupnpd; }
	chain miniupnpd { }
	chain prerouting { type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }
	chain postrouting { type nat hook postrouting priority 100; policy accept; jump postrouting_miniupnpd; }
	chain prerouting_miniupnpd { }
	chain postrouting_miniupnpd { }
}
`
	if mode == PMPOnly {
		nft += noPCP
	}
	nftPath := filepath.Join(l.Dir, r.Name+"-miniupnpd.nft")
	if err := os.WriteFile(nftPath, []byte(nft), 0o644); err != nil {
		return nil, err
	}
	stunIPs := []string{}
	out, err := stun.Run(ctx, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
	if err != nil {
		return nil, err
	}
	for _, f := range strings.Fields(out) {
		if p, err := netip.ParsePrefix(f); err == nil {
			stunIPs = append(stunIPs, p.Addr().String())
		}
	}
	if len(stunIPs) < 2 {
		return nil, fmt.Errorf("natlab: STUN host %s has %d addresses, miniupnpd needs a server with two", stun.Name, len(stunIPs))
	}
	if err := runAll(
		[]string{"ip", "netns", "exec", r.NS, "nft", "-f", nftPath},
		// miniupnpd's STUN check expects answers from the server's other
		// address, which the router's input firewall would drop as
		// unsolicited.
		[]string{"ip", "netns", "exec", r.NS, "nft", "insert", "rule", "ip", "natlab", "input",
			"iifname", "wan", "ip", "saddr", "{ " + strings.Join(stunIPs, ", ") + " }", "udp", "sport", "3478-3479", "accept"},
		// SSDP answers go to the multicast group on the LAN.
		[]string{"ip", "-n", r.NS, "route", "add", "239.0.0.0/8", "dev", "lan"},
	); err != nil {
		return nil, fmt.Errorf("natlab: miniupnpd set-up on %s: %w", r.Name, err)
	}
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	conf := strings.Join([]string{
		"ext_ifname=wan",
		"listening_ip=lan",
		fmt.Sprintf("http_port=%d", MiniUPnPHTTPPort),
		"enable_upnp=" + yes(mode != PMPOnly),
		"enable_natpmp=" + yes(mode != UPnPOnly),
		"secure_mode=yes",
		"system_uptime=no",
		"ext_perform_stun=yes",
		"ext_stun_host=" + stunIPs[0],
		"ext_stun_port=3478",
		"upnp_table_name=filter",
		"upnp_nat_table_name=filter",
		"upnp_forward_chain=miniupnpd",
		"upnp_nat_chain=prerouting_miniupnpd",
		"upnp_nat_postrouting_chain=postrouting_miniupnpd",
		"min_lifetime=120",
		"max_lifetime=86400",
		"uuid=3d3cec3a-8cf0-11e0-98ee-00" + fmt.Sprintf("%010x", s.index),
		fmt.Sprintf("allow 1024-65535 %s 1024-65535", s.LAN),
		"deny 0-65535 0.0.0.0/0 0-65535",
		"",
	}, "\n")
	confPath := filepath.Join(l.Dir, r.Name+"-miniupnpd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	m := &MiniUPnPd{Site: s, Mode: mode, conf: confPath, pid: filepath.Join(l.Dir, r.Name+"-miniupnpd.pid")}
	if err := m.start(); err != nil {
		return nil, err
	}
	return m, nil
}

// noPCP makes a router NAT-PMP only: it drops PCP requests to its
// NAT-PMP/PCP port and the PCP announcements it sends. @th,64,8 is the first
// byte after the UDP header, the version.
const noPCP = `table inet natlab_nopcp {
	chain in { type filter hook input priority -10; policy accept; udp dport 5351 @th,64,8 != 0 drop; }
	chain out { type filter hook output priority -10; policy accept; udp sport 5351 @th,64,8 != 0 drop; }
}
`

func (m *MiniUPnPd) start() error {
	// -d: foreground, logs to stderr. The pid file must be per router: the
	// filesystem is shared between namespaces.
	p, err := m.Site.Router.Start("miniupnpd", "-f", m.conf, "-d", "-P", m.pid)
	if err != nil {
		return err
	}
	m.Proc = p
	if err := p.WaitLog("Port forwarding is now enabled", 30*time.Second); err != nil {
		return fmt.Errorf("natlab: miniupnpd on %s: %w", m.Site.Router.Name, err)
	}
	return nil
}

// Reboot makes the router forget its port forwards, as a power cycle does:
// miniupnpd stops, its chains are emptied, and after down it starts again
// with a new NAT-PMP/PCP epoch.
func (m *MiniUPnPd) Reboot(ctx context.Context, down time.Duration) error {
	if err := m.Proc.Stop(5 * time.Second); err != nil {
		return fmt.Errorf("natlab: stop miniupnpd: %w", err)
	}
	for _, chain := range []string{"miniupnpd", "prerouting_miniupnpd", "postrouting_miniupnpd"} {
		if _, err := m.Site.Router.Run(ctx, "nft", "flush", "chain", "inet", "filter", chain); err != nil {
			return err
		}
	}
	select {
	case <-time.After(down):
	case <-ctx.Done():
		return ctx.Err()
	}
	return m.start()
}

// DropAnnouncements makes the router's announcements (NAT-PMP and PCP, to
// UDP 5350) go nowhere, so that clients must notice a reboot by the epoch.
func (m *MiniUPnPd) DropAnnouncements(ctx context.Context) error {
	_, err := m.Site.Router.Run(ctx, "nft", "add table inet natlab_noannounce; "+
		"add chain inet natlab_noannounce out { type filter hook output priority -10; policy accept; }; "+
		"add rule inet natlab_noannounce out udp dport 5350 drop")
	return err
}

// DropSSDPAnswers stops (on) or lets through again (off) the router's SSDP
// answers, so that a test controls which SSDP answers reach the LAN.
func (m *MiniUPnPd) DropSSDPAnswers(ctx context.Context, on bool) error {
	cmd := "delete table inet natlab_nossdp"
	if on {
		cmd = "add table inet natlab_nossdp; " +
			"add chain inet natlab_nossdp out { type filter hook output priority -10; policy accept; }; " +
			"add rule inet natlab_nossdp out udp sport 1900 drop"
	}
	_, err := m.Site.Router.Run(ctx, "nft", cmd)
	return err
}

// LANAddr is the router's address on the site's LAN, where miniupnpd listens.
func (m *MiniUPnPd) LANAddr() netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(m.Site.index), 0, 1})
}

// Redirects lists miniupnpd's port forwards as nftables shows them, one
// DNAT rule each (e.g. `... udp dport 40001 dnat ip to 10.3.0.11:41641`).
func (m *MiniUPnPd) Redirects(ctx context.Context) ([]string, error) {
	out, err := m.Site.Router.Run(ctx, "nft", "list", "chain", "inet", "filter", "prerouting_miniupnpd")
	if err != nil {
		return nil, err
	}
	var rules []string
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "dnat") {
			rules = append(rules, strings.TrimSpace(line))
		}
	}
	return rules, nil
}
