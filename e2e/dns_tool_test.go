package e2e

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/meshvpn/meshvpn/internal/dnstest"
)

// dnsServer is the tool mode "dns-server": records as NAME=IP arguments.
func dnsServer(args []string) error {
	fs := flag.NewFlagSet("dns-server", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:53", "address to serve (UDP and TCP)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	recs := map[string]netip.Addr{}
	for _, r := range fs.Args() {
		name, ip, ok := strings.Cut(r, "=")
		a, err := netip.ParseAddr(ip)
		if !ok || err != nil {
			return fmt.Errorf("record %q: want NAME=IP", r)
		}
		recs[strings.ToLower(name)] = a
	}
	s, err := dnstest.Listen(*listen, recs)
	if err != nil {
		return err
	}
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	s.Close()
	return nil
}

// dnsQuery is the tool mode "dns-query".
func dnsQuery(args []string) error {
	fs := flag.NewFlagSet("dns-query", flag.ContinueOnError)
	server := fs.String("server", "100.100.100.100:53", "server address")
	name := fs.String("name", "", "name to look up (A)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" {
		return errors.New("-name is required")
	}
	ap, err := netip.ParseAddrPort(*server)
	if err != nil {
		return err
	}
	a, err := dnstest.Query("udp", ap, strings.TrimSuffix(*name, ".")+".", dnsmessage.TypeA)
	if err != nil {
		return err
	}
	var ips []string
	for _, ip := range a.A {
		ips = append(ips, ip.String())
	}
	fmt.Printf("rcode=%s a=%s\n", strings.TrimPrefix(a.RCode.String(), "RCode"), strings.Join(ips, ","))
	return nil
}
