// Package natlab builds a throw-away network of Linux network namespaces for
// tests: an "internet" with public hosts, and sites behind NAT routers whose
// behaviour (full cone, restricted cone, port-restricted cone, symmetric,
// UDP blocked, double NAT) is made with nftables, each in two router
// variants: with an input firewall and without one (see Variant). It drives the stock `ip` and `nft` commands so that what
// a test does can be replayed by hand in a shell.
//
// Topology and address plan:
//
//	internet namespace: bridge br0, no addresses of its own
//	public hosts:       eth0 on br0, 203.0.113.1-99 (chosen by the caller,
//	                    e.g. the coordinator at 203.0.113.10)
//	site N router:      wan on br0 = 203.0.113.(100+N)/24,
//	                    lan bridge  = 10.N.0.1/24, ip_forward=1, NAT rules
//	site N hosts:       eth0 on the router's lan bridge, 10.N.0.(10+i)/24,
//	                    default route via 10.N.0.1
//	KindNone sites:     no router; hosts sit on br0 at 203.0.113.(150+k)/24
//	DoubleNAT site N:   carrier NAT wan on br0 = 203.0.113.(100+N)/24,
//	                    lan bridge 172.16.N.1/24; the home router's wan is
//	                    172.16.N.2/24 on it, its LAN as above
//	ISP hop (SiteSpec.ISPHop): a plain router NAME-isp holds the site's
//	                    203.0.113.(100+N) on br0 and 198.18.N.1/24 toward
//	                    the site, whose outermost router's wan is
//	                    198.18.N.2/24; every bridge namespace routes
//	                    198.18.N.0/24 via the hop (hop.go)
//
// Safety: every interface is created inside a lab namespace (`ip -n NS link
// add ... peer ... netns OTHER`), so no lab namespace ever has a link to the
// root namespace and no packet can leave the lab. Public addresses come from
// TEST-NET-3, LANs from RFC 1918. IPv6 is switched off in every lab
// namespace so that agents see one, deterministic, IPv4 topology.
//
// Every lab has a random name prefix ("mv" + 4 hex digits + "-"). Close kills
// the processes started in the lab and deletes its namespaces; New first
// removes namespaces left behind by crashed runs whose owner process is gone.
package natlab
