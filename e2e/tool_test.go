package e2e

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// The test binary doubles as small tools that tests run inside lab
// namespaces, to play a hostile LAN neighbour:
//
//	ip netns exec NS env MESHVPN_E2E_TOOL=MODE e2e.test ARGS
//
//	ssdp-liar    -location URL       answer every SSDP M-SEARCH for an IGD with URL
//	http-witness -listen ADDR        log every HTTP request it gets ("request METHOD PATH from ADDR")
//	dns-server -listen ADDR NAME=IP...   a small authoritative DNS server (the "original resolver")
//
// They print "ready" once listening, and run until killed.
//
//	dns-query -server ADDR -name NAME    ask one A question over UDP, print "rcode=R a=IP,..." (exit 1 on no answer)
//	resolved-check                       the agent's DNS pieces against a real systemd-resolved (see TestNamesSystemdResolved)
const toolEnv = "MESHVPN_E2E_TOOL"

func TestMain(m *testing.M) {
	if mode := os.Getenv(toolEnv); mode != "" {
		if err := runTool(mode, os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "e2e tool:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runTool(mode string, args []string) error {
	switch mode {
	case "ssdp-liar":
		return ssdpLiar(args)
	case "http-witness":
		return httpWitness(args)
	case "dns-server":
		return dnsServer(args)
	case "dns-query":
		return dnsQuery(args)
	case "resolved-check":
		return resolvedCheck()
	}
	return fmt.Errorf("unknown mode %q", mode)
}

// toolCommand returns the command line that runs the tool mode on a lab
// host with Host.Start.
func toolCommand(mode string, args ...string) (string, []string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	return "env", append([]string{toolEnv + "=" + mode, exe}, args...), nil
}

func ssdpLiar(args []string) error {
	fs := flag.NewFlagSet("ssdp-liar", flag.ContinueOnError)
	location := fs.String("location", "", "LOCATION to announce")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *location == "" {
		return errors.New("-location is required")
	}
	group := &net.UDPAddr{IP: net.IPv4(239, 255, 255, 250), Port: 1900}
	in, err := net.ListenMulticastUDP("udp4", nil, group)
	if err != nil {
		return err
	}
	// Answer from a unicast socket, as devices do.
	out, err := net.ListenUDP("udp4", nil)
	if err != nil {
		return err
	}
	fmt.Println("ready")
	buf := make([]byte, 2048)
	for {
		n, from, err := in.ReadFromUDP(buf)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(string(buf[:n]), "M-SEARCH") {
			continue
		}
		fmt.Printf("M-SEARCH from %s\n", from)
		answer := "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n" +
			"USN: uuid:liar::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nEXT:\r\nSERVER: liar/1 UPnP/1.1\r\n" +
			"LOCATION: " + *location + "\r\n\r\n"
		if _, err := out.WriteToUDP([]byte(answer), from); err != nil {
			fmt.Printf("answer to %s: %v\n", from, err)
		}
	}
}

func httpWitness(args []string) error {
	fs := flag.NewFlagSet("http-witness", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:5000", "address to serve")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Println("ready")
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Printf("request %s %s from %s\n", r.Method, r.URL.Path, r.RemoteAddr)
			http.NotFound(w, r)
		}),
	}
	return srv.Serve(ln)
}
