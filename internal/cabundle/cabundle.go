// Package cabundle reads the PEM CA bundles users give with --ca-file, for
// a coordinator or relay with a private CA.
package cabundle

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// Append adds the certificates of the PEM file at path to pool. A file
// without any certificate is an error: trusting nothing would only fail
// later, with a less clear message.
func Append(pool *x509.CertPool, path string) error {
	pem, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read CA file: %w", err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("CA file %s holds no PEM certificate", path)
	}
	return nil
}

// ClientTLS is the TLS client configuration for a coordinator whose CA is
// in the PEM file at path: that CA instead of the system roots. An empty
// path gives nil, which means the system roots.
func ClientTLS(path string) (*tls.Config, error) {
	if path == "" {
		return nil, nil
	}
	pool := x509.NewCertPool()
	if err := Append(pool, path); err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}
