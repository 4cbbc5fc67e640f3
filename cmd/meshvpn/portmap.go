package main

import (
	"fmt"
	"io"
	"time"

	"github.com/meshvpn/meshvpn/agent"
)

// printPortMap prints the status line of the local port mapping.
func printPortMap(w io.Writer, pm *agent.PortMapStatus) {
	switch {
	case pm == nil:
		fmt.Fprintln(w, "portmap: off (--no-portmap)")
	case pm.Protocol == "":
		fmt.Fprintf(w, "portmap: none (%s)\n", pm.Error)
	case pm.LeaseLeftS < 0:
		fmt.Fprintf(w, "portmap: %s %s (permanent)\n", pm.Protocol, pm.External)
	default:
		fmt.Fprintf(w, "portmap: %s %s (lease %v left)\n", pm.Protocol, pm.External, time.Duration(pm.LeaseLeftS)*time.Second)
	}
}
