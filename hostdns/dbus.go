package hostdns

import (
	"context"
	"fmt"
	"time"

	"github.com/godbus/dbus/v5"
)

// dbusTimeout bounds each call to systemd-resolved.
const dbusTimeout = 5 * time.Second

// dbusBus is systemd-resolved on the system bus.
type dbusBus struct {
	conn *dbus.Conn
	obj  dbus.BusObject
}

// SystemBus connects to systemd-resolved over the system bus.
func SystemBus() (Bus, error) {
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		return nil, fmt.Errorf("connect to the system bus: %w", err)
	}
	return &dbusBus{conn: conn, obj: conn.Object("org.freedesktop.resolve1", "/org/freedesktop/resolve1")}, nil
}

func (b *dbusBus) Call(method string, args ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), dbusTimeout)
	defer cancel()
	return b.obj.CallWithContext(ctx, "org.freedesktop.resolve1.Manager."+method, 0, args...).Err
}

func (b *dbusBus) Close() error { return b.conn.Close() }
