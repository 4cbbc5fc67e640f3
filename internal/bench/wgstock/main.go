// Command wgstock runs a stock wireguard-go device (upstream TUN, upstream
// StdNetBind, nothing of meshvpn) so that the benchmark can compare
// meshvpn's tunnel with plain wireguard-go on the same lab link.
//
//	wgstock -tun wgstock0 -addr 10.99.0.1/24 -port 51820 \
//	        -private HEX -peer-public HEX -peer-endpoint 203.0.113.21:51820 \
//	        -peer-allowed 10.99.0.2/32
//
// Keys are hex, as in the UAPI. It runs in the foreground until SIGTERM or
// SIGINT and then closes the device, which removes the TUN.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
)

func main() {
	var (
		tunName  = flag.String("tun", "wgstock0", "TUN device name")
		mtu      = flag.Int("mtu", 1420, "TUN MTU")
		addr     = flag.String("addr", "", "address of the TUN, CIDR")
		port     = flag.Int("port", 51820, "UDP listen port")
		private  = flag.String("private", "", "private key, hex")
		peerPub  = flag.String("peer-public", "", "peer public key, hex")
		endpoint = flag.String("peer-endpoint", "", "peer ip:port (optional)")
		allowed  = flag.String("peer-allowed", "", "peer allowed IPs, CIDR")
		verbose  = flag.Bool("v", false, "verbose wireguard-go log")
	)
	flag.Parse()
	if *addr == "" || *private == "" || *peerPub == "" || *allowed == "" {
		log.Fatal("wgstock: -addr, -private, -peer-public and -peer-allowed are required")
	}
	if err := run(*tunName, *mtu, *addr, *port, *private, *peerPub, *endpoint, *allowed, *verbose); err != nil {
		log.Fatalf("wgstock: %v", err)
	}
}

func run(tunName string, mtu int, addr string, port int, private, peerPub, endpoint, allowed string, verbose bool) error {
	tdev, err := tun.CreateTUN(tunName, mtu)
	if err != nil {
		return fmt.Errorf("create TUN %s: %w", tunName, err)
	}
	level := device.LogLevelError
	if verbose {
		level = device.LogLevelVerbose
	}
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), device.NewLogger(level, "wgstock: "))
	defer dev.Close()

	cfg := []string{
		"private_key=" + private,
		fmt.Sprintf("listen_port=%d", port),
		"public_key=" + peerPub,
		"replace_allowed_ips=true",
		"allowed_ip=" + allowed,
	}
	if endpoint != "" {
		cfg = append(cfg, "endpoint="+endpoint)
	}
	if err := dev.IpcSet(strings.Join(cfg, "\n") + "\n"); err != nil {
		return fmt.Errorf("configure device: %w", err)
	}
	if err := dev.Up(); err != nil {
		return fmt.Errorf("device up: %w", err)
	}
	// Address and link state with the ip command: this is a bench tool, and
	// the point is to measure wireguard-go, not our netlink code.
	for _, args := range [][]string{
		{"addr", "add", addr, "dev", tunName},
		{"link", "set", tunName, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	log.Printf("wgstock: %s up with %s, listening on UDP %d", tunName, addr, port)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sig:
		log.Printf("wgstock: %v, closing", s)
	case <-dev.Wait():
		return fmt.Errorf("device closed")
	}
	return nil
}
