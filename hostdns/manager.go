package hostdns

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync"
)

// Modes of host integration, as `meshvpn status` shows them.
const (
	ModeResolved   = "resolved"
	ModeResolvConf = "resolv.conf"
	ModeOff        = "off"
)

// Config configures a Manager.
type Config struct {
	// ResolvConf defaults to /etc/resolv.conf.
	ResolvConf string
	// StateDir keeps the original resolv.conf while ours is in place.
	StateDir string
	// Resolver is the agent's resolver address.
	Resolver netip.Addr
	// IfIndex is the TUN link, for systemd-resolved.
	IfIndex int
	// Bus connects to systemd-resolved; nil means the system bus, when
	// resolved runs.
	Bus func() (Bus, error)
	Log *slog.Logger
}

// Manager points the host's DNS at the resolver and puts it back.
type Manager struct {
	cfg Config

	mu     sync.Mutex
	mode   string
	domain string
	bus    Bus
}

// NewManager makes a Manager that has changed nothing yet (mode off).
func NewManager(cfg Config) *Manager {
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = DefaultResolvConf
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Bus == nil {
		cfg.Bus = func() (Bus, error) {
			if !resolvedRunning() {
				return nil, errors.New("systemd-resolved is not running")
			}
			return SystemBus()
		}
	}
	return &Manager{cfg: cfg, mode: ModeOff}
}

// Mode is what is in effect: ModeResolved, ModeResolvConf or ModeOff.
func (m *Manager) Mode() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mode
}

// Apply points the host at the resolver with domain as search domain. The
// first call picks the mode; later ones only update the domain.
func (m *Manager) Apply(domain string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mode != ModeOff && domain == m.domain {
		return nil
	}
	switch m.mode {
	case ModeResolved:
		if err := setLink(m.bus, m.cfg.IfIndex, m.cfg.Resolver, domain); err != nil {
			return err
		}
	case ModeResolvConf:
		if err := m.rewrite(domain); err != nil {
			return err
		}
	default:
		if resolvedManages(m.cfg.ResolvConf) {
			err := m.useResolved(domain)
			if err == nil {
				break
			}
			m.cfg.Log.Warn("systemd-resolved manages resolv.conf but could not be configured; rewriting resolv.conf instead", "err", err)
		}
		if err := m.useResolvConf(domain); err != nil {
			return err
		}
	}
	m.domain = domain
	return nil
}

func (m *Manager) useResolved(domain string) error {
	bus, err := m.cfg.Bus()
	if err != nil {
		return err
	}
	if err := setLink(bus, m.cfg.IfIndex, m.cfg.Resolver, domain); err != nil {
		// Whatever part was set goes with the link; undo it anyway.
		revertLink(bus, m.cfg.IfIndex)
		bus.Close()
		return err
	}
	m.bus, m.mode = bus, ModeResolved
	return nil
}

func (m *Manager) backupPath() string { return filepath.Join(m.cfg.StateDir, backupName) }

func (m *Manager) useResolvConf(domain string) error {
	orig, err := readResolvConf(m.cfg.ResolvConf)
	if err != nil {
		return fmt.Errorf("read resolv.conf: %w", err)
	}
	if bytes.HasPrefix(orig, []byte(marker)) {
		// Recover found no backup for it: another agent's, or a backup lost.
		return fmt.Errorf("%s was written by meshvpn and there is no original to keep; restore it by hand", m.cfg.ResolvConf)
	}
	if err := writeBackup(m.cfg.StateDir, orig); err != nil {
		return err
	}
	m.mode = ModeResolvConf
	if err := m.rewrite(domain); err != nil {
		m.mode = ModeOff
		Recover(m.cfg.ResolvConf, m.cfg.StateDir)
		return err
	}
	return nil
}

// rewrite writes our resolv.conf from the backed-up original.
func (m *Manager) rewrite(domain string) error {
	orig, err := readResolvConf(m.backupPath())
	if err != nil {
		return fmt.Errorf("read resolv.conf backup: %w", err)
	}
	return writeInPlace(m.cfg.ResolvConf, render(orig, m.cfg.Resolver, domain, m.backupPath()))
}

// Restore undoes Apply: resolved forgets the link's settings, or the
// original resolv.conf comes back (unless someone rewrote it meanwhile).
func (m *Manager) Restore() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	mode := m.mode
	m.mode, m.domain = ModeOff, ""
	switch mode {
	case ModeResolved:
		err := revertLink(m.bus, m.cfg.IfIndex)
		m.bus.Close()
		m.bus = nil
		return err
	case ModeResolvConf:
		res, err := Recover(m.cfg.ResolvConf, m.cfg.StateDir)
		if res == LeftChanged {
			m.cfg.Log.Warn("resolv.conf was changed by someone else while meshvpn ran; left as it is", "file", m.cfg.ResolvConf)
		}
		return err
	}
	return nil
}
