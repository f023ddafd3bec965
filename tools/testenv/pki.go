package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki holds the paths (and, where the kubeconfig needs them, the PEM bytes)
// of everything generated under the state directory.
type pki struct {
	caCert, caKey         string // CA that signs the serving and client certs and is the client CA
	servingCert, servKey  string // API server serving certificate
	adminCert, adminKey   string // client certificate: CN=testenv-admin, O=system:masters
	saKey, saPub          string // service-account token signing key pair
	caPEM                 []byte // ca.crt
	adminPEM, adminKeyPEM []byte // admin.crt, admin.key
}

// generatePKI writes a fresh CA, a serving certificate for 127.0.0.1/localhost,
// an admin client certificate and a service-account signing key pair into dir.
// All keys are ECDSA P-256, private keys are PKCS#8 ("PRIVATE KEY") and 0600.
func generatePKI(dir string) (*pki, error) {
	p := pkiPaths(dir)
	now := time.Now()
	notBefore := now.Add(-time.Hour) // tolerate small clock differences

	// Certificate authority.
	caKey, err := newKey()
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          mustSerial(),
		Subject:               pkix.Name{CommonName: "testenv-ca", Organization: []string{"lattice testenv"}},
		NotBefore:             notBefore,
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	p.caPEM = pemBytes("CERTIFICATE", caDER)
	if err := writeFile(p.caCert, p.caPEM, 0o644); err != nil {
		return nil, err
	}
	if err := writeKey(p.caKey, caKey); err != nil {
		return nil, err
	}

	// Serving certificate for the API server. Besides loopback it carries the
	// in-cluster names and the first service IP, as a real API server's does.
	servKey, err := newKey()
	if err != nil {
		return nil, err
	}
	servTmpl := &x509.Certificate{
		SerialNumber: mustSerial(),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    notBefore,
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{
			"localhost",
			"kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local",
		},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP(firstServiceIP)},
		BasicConstraintsValid: true,
	}
	if _, _, err := signLeaf(p.servingCert, p.servKey, servTmpl, servKey, ca, caKey); err != nil {
		return nil, err
	}

	// Admin client certificate; the group system:masters is bound to
	// cluster-admin by the bootstrap RBAC policy.
	adminKey, err := newKey()
	if err != nil {
		return nil, err
	}
	adminTmpl := &x509.Certificate{
		SerialNumber:          mustSerial(),
		Subject:               pkix.Name{CommonName: "testenv-admin", Organization: []string{"system:masters"}},
		NotBefore:             notBefore,
		NotAfter:              now.AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	if p.adminPEM, p.adminKeyPEM, err = signLeaf(p.adminCert, p.adminKey, adminTmpl, adminKey, ca, caKey); err != nil {
		return nil, err
	}

	// Service-account token signing key pair (ES256).
	saKey, err := newKey()
	if err != nil {
		return nil, err
	}
	if err := writeKey(p.saKey, saKey); err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return nil, err
	}
	if err := writeFile(p.saPub, pemBytes("PUBLIC KEY", pubDER), 0o644); err != nil {
		return nil, err
	}
	return p, nil
}

// pkiPaths names the files generatePKI writes under dir.
func pkiPaths(dir string) *pki {
	return &pki{
		caCert:      filepath.Join(dir, "ca.crt"),
		caKey:       filepath.Join(dir, "ca.key"),
		servingCert: filepath.Join(dir, "apiserver.crt"),
		servKey:     filepath.Join(dir, "apiserver.key"),
		adminCert:   filepath.Join(dir, "admin.crt"),
		adminKey:    filepath.Join(dir, "admin.key"),
		saKey:       filepath.Join(dir, "sa.key"),
		saPub:       filepath.Join(dir, "sa.pub"),
	}
}

// loadPKI reads back what generatePKI wrote into dir (for --resume).
func loadPKI(dir string) (*pki, error) {
	p := pkiPaths(dir)
	var err error
	if p.caPEM, err = os.ReadFile(p.caCert); err != nil {
		return nil, err
	}
	if p.adminPEM, err = os.ReadFile(p.adminCert); err != nil {
		return nil, err
	}
	if p.adminKeyPEM, err = os.ReadFile(p.adminKey); err != nil {
		return nil, err
	}
	for _, f := range []string{p.caKey, p.servingCert, p.servKey, p.saKey, p.saPub} {
		if _, err := os.Stat(f); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// signLeaf signs tmpl with the CA, writes certificate and key, and returns
// both in PEM form.
func signLeaf(certPath, keyPath string, tmpl *x509.Certificate, key *ecdsa.PrivateKey, ca *x509.Certificate, caKey crypto.Signer) (certPEM, keyPEM []byte, err error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate %s: %w", tmpl.Subject.CommonName, err)
	}
	certPEM = pemBytes("CERTIFICATE", der)
	if keyPEM, err = keyBytes(key); err != nil {
		return nil, nil, err
	}
	if err := writeFile(certPath, certPEM, 0o644); err != nil {
		return nil, nil, err
	}
	if err := writeFile(keyPath, keyPEM, 0o600); err != nil {
		return nil, nil, err
	}
	return certPEM, keyPEM, nil
}

func newKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func mustSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n.Add(n, big.NewInt(1))
}

func pemBytes(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func keyBytes(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pemBytes("PRIVATE KEY", der), nil
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	b, err := keyBytes(key)
	if err != nil {
		return err
	}
	return writeFile(path, b, 0o600)
}

// writeFile writes atomically (temp file + rename) so that a reader never sees
// a half-written file.
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
