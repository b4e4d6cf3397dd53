package hub

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// Audit results of CONNECTs refused for their certificate.
const (
	// resultCertificateRevoked: a certificate of the built-in CA that was
	// revoked (when the listener's handshake did not refuse it already).
	resultCertificateRevoked = "certificate-revoked"
	// resultCertificateProvisioning: X.509 chain provisioning refused the
	// certificate; the pipeline audited why.
	resultCertificateProvisioning = "certificate-provisioning-refused"
)

// certificateDialect names the hub in the provisioning audit trail and
// metrics of X.509 chain provisioning.
const certificateDialect = "mqtt"

// CertificateProvisioner provisions a device on its first connection with
// a client certificate chained to a CA that a profile trusts (X.509 chain
// provisioning); *provision.Service is one.
type CertificateProvisioner interface {
	ProvisionByCertificate(ctx context.Context, req provision.ChainRequest) (*provision.Result, error)
}

// auth is the outcome of a CONNECT's credential lookup.
type auth struct {
	cred *registry.Credential
	dev  *registry.Device
	// refusal is empty when cred and dev authenticate the CONNECT.
	refusal string
	// code answers the refusal; ErrBadUsernameOrPassword when zero.
	code packets.Code
	// audited: the refusal is in the audit trail already.
	audited bool
	// orgID, deviceID and detail go into the refusal's audit event when
	// dev is nil.
	orgID, deviceID, detail string
	// serial and fingerprint of the TLS client certificate, lowercase hex.
	serial, fingerprint string
}

// peerChain is the client certificate chain of a TLS connection, leaf
// first; nil when the client sent none.
func peerChain(cl *mqtt.Client) []*x509.Certificate {
	st, ok := tlsOf(cl.Net.Conn)
	if !ok {
		return nil
	}
	if certs := st.PeerCertificates; len(certs) > 0 {
		return certs
	}
	return nil
}

// findByCertificate authenticates a CONNECT over TLS with a client
// certificate, by the certificate alone (user name and password are
// ignored): the active X509_CERTIFICATE credential whose lookup key is
// the leaf's SHA-256 fingerprint. A certificate of the built-in CA must
// not be revoked: the listener's handshake check (certauth) refuses it
// already, this covers a listener without one and a revocation that lands
// between the handshake and the CONNECT. A certificate that matches no
// credential is handed to Options.CertificateProvisioner, which may
// provision its device (X.509 chain provisioning).
func (h *Hub) findByCertificate(ctx context.Context, chain []*x509.Certificate, host string) (auth, error) {
	leaf := chain[0]
	sum := sha256.Sum256(leaf.Raw)
	a := auth{fingerprint: hex.EncodeToString(sum[:])}
	if leaf.SerialNumber != nil {
		a.serial = leaf.SerialNumber.Text(16)
	}
	rec, err := h.store.GetCertificateByFingerprint(ctx, a.fingerprint)
	switch {
	case err == nil && rec.Status == registry.CertificateRevoked:
		a.refusal, a.code = resultCertificateRevoked, packets.ErrNotAuthorized
		a.orgID, a.deviceID = rec.OrgID, rec.DeviceID
		a.detail = fmt.Sprintf("certificate serial %s (SHA-256 %s) is revoked", rec.Serial, a.fingerprint)
		return a, nil
	case err != nil && !errors.Is(err, registry.ErrNotFound):
		return a, fmt.Errorf("certificate record: %w", err)
	}

	a.cred, a.dev, a.refusal, err = h.lookup(ctx, registry.CredentialX509, a.fingerprint, nil)
	if err != nil || a.refusal != resultUnknownCredentials || h.opts.CertificateProvisioner == nil {
		if a.refusal == resultUnknownCredentials {
			a.detail = "no credential has certificate SHA-256 " + a.fingerprint
		}
		return a, err
	}
	_, perr := h.opts.CertificateProvisioner.ProvisionByCertificate(ctx, provision.ChainRequest{
		Dialect: certificateDialect, Source: host, Chain: chain,
	})
	switch reason := provision.ReasonOf(perr); {
	case perr == nil:
		a.cred, a.dev, a.refusal, err = h.lookup(ctx, registry.CredentialX509, a.fingerprint, nil)
		if a.refusal == resultUnknownCredentials {
			// Provisioned, then revoked at once: refused as unknown.
			a.detail = "certificate SHA-256 " + a.fingerprint + " was provisioned but no longer authenticates"
		}
		return a, err
	case reason == provision.ReasonUntrustedCertificate:
		a.detail = "no credential has certificate SHA-256 " + a.fingerprint + ", and it chains to no CA a profile trusts"
		return a, nil
	case reason == provision.ReasonInternal || reason == provision.ReasonBusy:
		return a, fmt.Errorf("X.509 chain provisioning: %w", perr)
	default:
		a.refusal, a.code, a.audited = resultCertificateProvisioning, packets.ErrNotAuthorized, true
		h.log.Info("X.509 chain provisioning refused", "remote", host, "fingerprint", a.fingerprint, "reason", reason, "error", perr)
		return a, nil
	}
}
