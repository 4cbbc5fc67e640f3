package natlab

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// A delay box is a namespace (NAME-dly) spliced into a site's link to the
// internet bridge: a layer-2 forwarder that passes every frame between its
// two interfaces after a fixed delay, each way. A flat veth lab has
// microseconds between two NATs, the internet milliseconds, and whether
// two simultaneous first packets each pass their own NAT before the other
// arrives depends on that gap (LAB-NOTES.md). The kernels this project
// runs on lack sch_netem (no modules either), so the forwarder is
// userspace: packet sockets in the lab's own process.
//
// Both sockets use PACKET_VNET_HDR: frames read carry the kernel's
// offload state (a TCP segment larger than the MTU, a checksum still to
// fill in), and writing them back with it lets the kernel finish them, so
// the box passes any traffic unchanged.

// delayQueue bounds the frames in flight each way; past it frames are
// dropped, as a router's full queue would.
const delayQueue = 4096

// delayPoll is how often a forwarder blocked on a quiet link checks
// whether the lab is closing.
const delayPoll = 200 * time.Millisecond

// delayLink forwards between two packet sockets of one namespace.
type delayLink struct {
	delay   time.Duration
	fds     [2]int
	stopped atomic.Bool
	wg      sync.WaitGroup
}

// startDelay opens packet sockets on interfaces a and b of box (which
// must be up, promiscuous and hold no address) and forwards between them
// with the given one-way delay until Close.
func startDelay(box *Host, a, b string, delay time.Duration) (*delayLink, error) {
	d := &delayLink{delay: delay, fds: [2]int{-1, -1}}
	err := box.Do(func() error {
		for i, name := range []string{a, b} {
			fd, err := openPacketSocket(name)
			if err != nil {
				return err
			}
			d.fds[i] = fd
		}
		return nil
	})
	if err != nil {
		d.closeFDs()
		return nil, fmt.Errorf("natlab: delay box %s: %w", box.Name, err)
	}
	d.forward(d.fds[0], d.fds[1])
	d.forward(d.fds[1], d.fds[0])
	return d, nil
}

// openPacketSocket opens a raw packet socket bound to interface name,
// with virtio-net headers, that does not see the frames it sends itself.
func openPacketSocket(name string) (int, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return -1, err
	}
	proto := htons(unix.ETH_P_ALL)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		return -1, fmt.Errorf("packet socket: %w", err)
	}
	opts := []struct {
		level, opt, val int
		what            string
	}{
		{unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1, "PACKET_VNET_HDR"},
		{unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING"},
		{unix.SOL_SOCKET, unix.SO_RCVBUF, 4 << 20, "SO_RCVBUF"},
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.val); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("%s on %s: %w", o.what, name, err)
		}
	}
	tv := unix.NsecToTimeval(delayPoll.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("SO_RCVTIMEO on %s: %w", name, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind packet socket to %s: %w", name, err)
	}
	return fd, nil
}

func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

type delayedFrame struct {
	due  time.Time
	data []byte
}

// forward reads frames from in and writes each to out once the delay has
// passed. The delay is constant, so a FIFO keeps the frames in order.
func (d *delayLink) forward(in, out int) {
	q := make(chan delayedFrame, delayQueue)
	d.wg.Add(2)
	go func() {
		defer d.wg.Done()
		defer close(q)
		// A TSO segment reaches 64 KiB, plus the virtio-net header.
		buf := make([]byte, 70000)
		for !d.stopped.Load() {
			n, _, err := unix.Recvfrom(in, buf, 0)
			if err != nil {
				if err == unix.EAGAIN || err == unix.EINTR {
					continue
				}
				return // socket closed, or its interface gone
			}
			f := delayedFrame{due: time.Now().Add(d.delay), data: append([]byte(nil), buf[:n]...)}
			select {
			case q <- f:
			default: // queue full: drop
			}
		}
	}()
	go func() {
		defer d.wg.Done()
		for f := range q {
			if d.stopped.Load() {
				continue
			}
			if wait := time.Until(f.due); wait > 0 {
				time.Sleep(wait)
			}
			// A frame the interface refuses is lost, as on a real link.
			_, _ = unix.Write(out, f.data)
		}
	}()
}

// Close stops the forwarders and closes the sockets.
func (d *delayLink) Close() error {
	d.stopped.Store(true)
	d.wg.Wait()
	d.closeFDs()
	return nil
}

func (d *delayLink) closeFDs() {
	for i, fd := range d.fds {
		if fd >= 0 {
			unix.Close(fd)
			d.fds[i] = -1
		}
	}
}

// Delay box interface names: toward the site, toward the bridge.
const (
	delaySiteIf = "dsite"
	delayNetIf  = "dnet"
)

// delayBox makes the namespace NAME-dly that will sit between the site's
// outermost box and the bridge, or returns nil when the site has no
// WANDelay.
func (s *Site) delayBox() (*Host, error) {
	if s.wanDelay <= 0 {
		return nil, nil
	}
	return s.lab.newHost(s.Name+"-dly", s)
}

// startDelayBox starts box's forwarder once connectRouted has wired it,
// and has the lab stop it on Close.
func (s *Site) startDelayBox(box *Host) error {
	if box == nil {
		return nil
	}
	d, err := startDelay(box, delaySiteIf, delayNetIf, s.wanDelay)
	if err != nil {
		return err
	}
	return s.lab.addCloser(d)
}
