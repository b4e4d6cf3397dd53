package apiclient

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// The built-in CA and its certificates.

// Public routes of the built-in CA, served without an API key.
const (
	ChainPath = "/ca/chain.pem"
	CRLPath   = "/ca/crl"
)

// MaxPublicDownload bounds what CAChainPEM and CRL read: a CRL of a
// million entries is about 40 MiB.
const MaxPublicDownload = 128 << 20

// GetCA describes the built-in CA: its issuing and root certificates and
// the chain devices trust; never its keys.
func (c *Client) GetCA(ctx context.Context) (*api.CAInfo, error) {
	var out api.CAInfo
	return &out, c.do(ctx, request{method: http.MethodGet, path: "/api/ca"}, &out)
}

// CertificateFilter selects certificates in ListCertificates and
// ListDeviceCertificates; zero fields match everything.
type CertificateFilter struct {
	// DeviceID keeps one device's certificates (ListCertificates only;
	// ListDeviceCertificates takes the device from its argument).
	DeviceID string
	Status   registry.CertificateStatus
	// ExpiresWithin keeps the certificates still valid that expire within
	// that time from the server's now: the ones to renew.
	ExpiresWithin time.Duration
	Limit         int
	// After is the cursor: the Next of the previous page.
	After string
}

func (f CertificateFilter) query() url.Values {
	q := listQuery(f.Limit, f.After)
	if f.Status != "" {
		q.Set("status", string(f.Status))
	}
	if f.ExpiresWithin != 0 {
		q.Set("expiresWithin", f.ExpiresWithin.String())
	}
	return q
}

// ListCertificates returns one page of the certificates the built-in CA
// issued, soonest expiry first.
func (c *Client) ListCertificates(ctx context.Context, f CertificateFilter) (*api.List[registry.Certificate], error) {
	q := f.query()
	if f.DeviceID != "" {
		q.Set("device", f.DeviceID)
	}
	var out api.List[registry.Certificate]
	return &out, c.do(ctx, request{method: http.MethodGet, path: "/api/certificates", query: q}, &out)
}

// ListDeviceCertificates returns one page of a device's certificates; an
// unknown device is an *Error with status 404 (where ListCertificates
// would return an empty list). f.DeviceID is ignored.
func (c *Client) ListDeviceCertificates(ctx context.Context, deviceID string, f CertificateFilter) (*api.List[registry.Certificate], error) {
	var out api.List[registry.Certificate]
	return &out, c.do(ctx, request{method: http.MethodGet, path: pathOf("/api/devices/%s/certificates", deviceID), query: f.query()}, &out)
}

// GetCertificate returns the record of one certificate, by its serial in
// lowercase hex without leading zeros (pki.SerialHex).
func (c *Client) GetCertificate(ctx context.Context, serial string) (*registry.Certificate, error) {
	var out registry.Certificate
	return &out, c.do(ctx, request{method: http.MethodGet, path: pathOf("/api/certificates/%s", serial)}, &out)
}

// IssueCertificate issues a certificate for a device from its CSR, or with
// a key pair the server generates (in.GenerateKey): the answer then holds
// the private key, the only time it exists outside the device.
func (c *Client) IssueCertificate(ctx context.Context, deviceID string, in api.IssueCertificateRequest) (*api.IssuedCertificate, error) {
	var out api.IssuedCertificate
	return &out, c.do(ctx, request{method: http.MethodPost, path: pathOf("/api/devices/%s/certificates", deviceID), in: in}, &out)
}

// RevokeCertificate revokes a certificate and its credential, with reason
// (the server's default, unspecified, when empty). Revoking a revoked
// certificate is not an error.
func (c *Client) RevokeCertificate(ctx context.Context, serial string, reason registry.RevocationReason) (*registry.Certificate, error) {
	r := request{method: http.MethodPost, path: pathOf("/api/certificates/%s/revoke", serial)}
	if reason != "" {
		r.in = api.RevokeCertificateRequest{Reason: reason}
	}
	var out registry.Certificate
	return &out, c.do(ctx, r, &out)
}

// CAChainPEM fetches the CA chain devices and relying parties trust (the
// issuing CA, then the root), in PEM, from the public route ChainPath.
func (c *Client) CAChainPEM(ctx context.Context) ([]byte, error) {
	return c.download(ctx, ChainPath, "application/pem-certificate-chain")
}

// CRL fetches the current certificate revocation list of the built-in CA,
// DER-encoded, from the public route CRLPath.
func (c *Client) CRL(ctx context.Context) ([]byte, error) {
	return c.download(ctx, CRLPath, "application/pkix-crl")
}

// download GETs a public route's body, of at most MaxPublicDownload bytes.
func (c *Client) download(ctx context.Context, path, accept string) ([]byte, error) {
	resp, err := c.send(ctx, request{method: http.MethodGet, path: path, public: true, accept: accept})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxPublicDownload+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	if len(b) > MaxPublicDownload {
		return nil, fmt.Errorf("GET %s: the answer exceeds %d MiB", path, MaxPublicDownload>>20)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("GET %s: empty answer", path)
	}
	return b, nil
}
