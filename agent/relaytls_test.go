package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// testCA makes a CA and a server certificate for 127.0.0.1 signed by it.
func testCA(t *testing.T) (caPEM []byte, server tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, tmpl, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		tls.Certificate{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}
}

// tlsHandshaker is a TLS server on loopback with cert that shakes hands
// and hangs up, closed when t ends.
func tlsHandshaker(t *testing.T, cert tls.Certificate) net.Listener {
	ln, err := tls.Listen("tcp4", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = c.(*tls.Conn).Handshake()
				c.Close()
			}()
		}
	}()
	return ln
}

// TestDialRelayVerifiesTLS checks that a turns: relay is trusted through
// the CA the coordinator advertises or the agent's --ca-file, and refused
// otherwise.
func TestDialRelayVerifiesTLS(t *testing.T) {
	caPEM, cert := testCA(t)
	ln := tlsHandshaker(t, cert)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	target := func(ca string) relayTarget {
		return relayTarget{Relay: control.Relay{URL: "turns:" + ln.Addr().String() + "?transport=tcp", CA: ca}, Transport: "tls", Server: ln.Addr().String()}
	}
	log := slog.New(slog.DiscardHandler)
	for _, c := range []struct {
		name   string
		caFile string
		ca     string
		ok     bool
	}{
		{"advertised CA", "", string(caPEM), true},
		{"agent CA file", caFile, "", true},
		{"no CA", "", "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := &Agent{cfg: Config{CAFile: c.caFile}, log: log}
			conn, err := a.dialRelay(context.Background(), target(c.ca))
			if c.ok {
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				conn.Close()
				return
			}
			if err == nil {
				conn.Close()
				t.Fatal("a relay with an unknown CA was trusted")
			}
			if !strings.Contains(err.Error(), "certificate") {
				t.Errorf("error %q does not say it is about the certificate", err)
			}
		})
	}
}

// TestDialRelayTLSErrorBounded: whoever answers on a turns: relay's
// address picks the certificate, and Go's verification error lists up to
// 99 of its names; the error, which status shows and the log repeats,
// stays short.
func TestDialRelayTLSErrorBounded(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "x"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for i := range 99 {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(fmt.Sprintf("2001:db8:ffff:ffff:ffff:ffff:ffff:%x", i)))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ln := tlsHandshaker(t, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key})
	// The certificate is trusted (its own CA), only the address does not match.
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	tg := relayTarget{Relay: control.Relay{URL: "turns:" + ln.Addr().String() + "?transport=tcp", CA: string(caPEM)}, Transport: "tls", Server: ln.Addr().String()}
	a := &Agent{log: slog.New(slog.DiscardHandler)}
	c, err := a.dialRelay(context.Background(), tg)
	if err == nil {
		c.Close()
		t.Fatal("a certificate for other addresses was trusted")
	}
	if len(err.Error()) > 300 || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("error of %d bytes (want at most 300, about the certificate): %.400s", len(err.Error()), err)
	}
	t.Logf("error: %v", err)
}
