package coordinator

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/coordinator/stunserver"
)

func TestNewRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	for name, cfg := range map[string]Config{
		"no listen":       {StateDir: dir},
		"cert only":       {Listen: ":0", StateDir: dir, TLSCert: "c.pem"},
		"missing cert":    {Listen: ":0", StateDir: dir, TLSCert: "nope.pem", TLSKey: "nope.key"},
		"host with port":  {Listen: ":0", StateDir: dir, PublicHost: "example.com:3478"},
		"empty state dir": {Listen: ":0"},
	} {
		if s, err := New(cfg); err == nil {
			s.Close()
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestSTUNServersList(t *testing.T) {
	s := newTestServer(t)
	if got := s.stunServers(httptest.NewRequest("GET", "http://coord.example:8080/", nil)); len(got) != 0 {
		t.Fatalf("STUN disabled: %v", got)
	}
	st, err := stunserver.Listen("127.0.0.1:0", "", s.log)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s.stun = st
	port := st.Port()
	p := func(h string) []string { return []string{net.JoinHostPort(h, strconv.Itoa(port))} }
	cases := []struct {
		public, host string
		want         []string
	}{
		{"", "coord.example:8080", p("coord.example")},
		{"", "coord.example", p("coord.example")},
		{"", "[2001:db8::1]:443", p("2001:db8::1")},
		{"stun.example", "coord.example:8080", p("stun.example")},
		{"2001:db8::2", "x", p("2001:db8::2")},
	}
	for _, c := range cases {
		s.cfg.PublicHost = c.public
		r := httptest.NewRequest("GET", "/", nil)
		r.Host = c.host
		if got := s.stunServers(r); !reflect.DeepEqual(got, c.want) {
			t.Errorf("public %q host %q: %v, want %v", c.public, c.host, got, c.want)
		}
	}
}

func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := writeSelfSigned(t, dir)
	s, stop := runServer(t, Config{Listen: "127.0.0.1:0", StateDir: filepath.Join(dir, "state"), TLSCert: certFile, TLSKey: keyFile, Logger: testLogger(t)})
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	key := newKey(t, s.store, false, 0)
	body, _ := json.Marshal(control.RegisterRequest{AuthKey: key, Hostname: "tls", PublicKey: newPublicKey(t)})
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Post("https://"+s.HTTPAddr().String()+control.PathRegister, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("register over TLS: %d", resp.StatusCode)
	}
}

// writeSelfSigned writes a certificate for 127.0.0.1 and its key.
func writeSelfSigned(t *testing.T, dir string) (string, string, *x509.CertPool) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "meshvpn test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}
