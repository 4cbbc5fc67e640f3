package netcheck

import (
	"context"
	"errors"
	"net"

	"github.com/meshvpn/meshvpn/portmap"
)

// PortMapProbe asks the default gateway which of PCP, NAT-PMP and UPnP it
// speaks and, when one does, makes a short-lived mapping for a throwaway
// UDP port to learn the address peers would be given, then deletes it.
// It is what Config.PortMapProbe is meant to be set to.
func PortMapProbe(ctx context.Context) (PortMapResult, error) {
	var res PortMapResult
	pr, err := portmap.Probe(ctx, portmap.Config{})
	if err != nil {
		return res, err
	}
	res.PCP, res.NATPMP, res.UPnP = pr.PCP, pr.NATPMP, pr.UPnP
	if !pr.Any() {
		return res, nil
	}
	if pr.ExternalProblem != "" {
		return res, errors.New(pr.ExternalProblem)
	}
	pc, err := net.ListenPacket("udp4", ":0")
	if err != nil {
		return res, err
	}
	defer pc.Close()
	c := portmap.NewClient(portmap.Config{})
	m, err := c.Map(ctx, uint16(pc.LocalAddr().(*net.UDPAddr).Port))
	if err != nil {
		return res, err
	}
	res.Protocol, res.External = string(m.Protocol), m.External.String()
	return res, c.Close()
}
