package natlab

import (
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// The test binary doubles as a tiny UDP tool that the NAT test runs inside
// lab namespaces: `ip netns exec NS env NATLAB_UDPTOOL=1 natlab.test -- MODE
// ARGS`. TestMain sees the variable and runs the tool instead of the tests.
//
//	echo   -listen ADDR                       answer every packet with the sender's address
//	client -bind ADDR -echo A,B -listen DUR   learn the mapping seen by each echo server,
//	                                          print "mapped SERVER OBSERVED", then "ready",
//	                                          then "from SRC PAYLOAD" for DUR
//	probe  -bind ADDR -to ADDR                send a few unsolicited "probe" packets
//	portmap -disable P,Q                      map a UDP port with the portmap package,
//	                                          print "RESULT {json}", delete the mapping
func TestMain(m *testing.M) {
	if os.Getenv("NATLAB_UDPTOOL") == "1" {
		udpTool(os.Args[1:])
	}
	os.Exit(m.Run())
}

func udpTool(args []string) {
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "udptool: no mode")
		os.Exit(2)
	}
	var err error
	switch args[0] {
	case "echo":
		err = udpEcho(args[1:])
	case "client":
		err = udpClient(args[1:])
	case "probe":
		err = udpProbe(args[1:])
	case "portmap": // miniupnpd_test.go
		err = portmapTool(args[1:])
	default:
		err = fmt.Errorf("unknown mode %q", args[0])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "udptool:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func udpEcho(args []string) error {
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	listen := fs.String("listen", ":3478", "address to serve")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := net.ListenPacket("udp4", *listen)
	if err != nil {
		return err
	}
	fmt.Println("listening", c.LocalAddr())
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		if string(buf[:n]) == "echo" {
			c.WriteTo([]byte("seen "+from.String()), from)
		}
	}
}

func udpClient(args []string) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	bind := fs.String("bind", "0.0.0.0:40000", "local address")
	echo := fs.String("echo", "", "comma-separated echo servers")
	listen := fs.Duration("listen", 3*time.Second, "how long to report inbound packets")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := net.ListenPacket("udp4", *bind)
	if err != nil {
		return err
	}
	buf := make([]byte, 1500)
	for _, server := range strings.Split(*echo, ",") {
		to, err := net.ResolveUDPAddr("udp4", server)
		if err != nil {
			return err
		}
		got := false
		for try := 0; try < 5 && !got; try++ {
			c.WriteTo([]byte("echo"), to)
			c.SetReadDeadline(time.Now().Add(400 * time.Millisecond))
			n, from, err := c.ReadFrom(buf)
			if err == nil && from.String() == to.String() {
				if seen, ok := strings.CutPrefix(string(buf[:n]), "seen "); ok {
					fmt.Println("mapped", server, seen)
					got = true
				}
			}
		}
		if !got {
			return fmt.Errorf("no answer from echo server %s", server)
		}
	}
	fmt.Println("ready")
	deadline := time.Now().Add(*listen)
	c.SetReadDeadline(deadline)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if time.Now().After(deadline) {
				return nil
			}
			return err
		}
		fmt.Println("from", from, string(buf[:n]))
	}
}

func udpProbe(args []string) error {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	bind := fs.String("bind", "0.0.0.0:3479", "local address")
	to := fs.String("to", "", "destination")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := net.ListenPacket("udp4", *bind)
	if err != nil {
		return err
	}
	dst, err := net.ResolveUDPAddr("udp4", *to)
	if err != nil {
		return err
	}
	for range 3 {
		if _, err := c.WriteTo([]byte("probe"), dst); err != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}
