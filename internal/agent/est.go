package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// estReenrollPath is the EST renewal operation (RFC 7030 section 4.2.2)
// under the server's URL.
const estReenrollPath = "/.well-known/est/simplereenroll"

// maxESTAnswer bounds an EST answer: one certificate, in base64.
const maxESTAnswer = 256 << 10

// errRenewalRefused marks an EST renewal the server refused (a 4xx
// answer, or the client certificate refused in the handshake): retrying
// soon will not change it, though an operator may.
var errRenewalRefused = errors.New("certificate renewal refused by the server")

// estReenroll posts csrDER to the EST server at baseURL with cert as the
// TLS client certificate and returns the certificates of the answer.
func estReenroll(ctx context.Context, baseURL string, base *tls.Config, cert tls.Certificate, csrDER []byte) ([]*x509.Certificate, error) {
	t := base.Clone()
	t.Certificates = []tls.Certificate{cert}
	tr := &http.Transport{TLSClientConfig: t, ForceAttemptHTTP2: false, DisableKeepAlives: true, Proxy: http.ProxyFromEnvironment}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	body := base64.StdEncoding.EncodeToString(csrDER)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(baseURL, "/")+estReenrollPath, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/pkcs10")
	req.Header.Set("Content-Transfer-Encoding", "base64")
	resp, err := client.Do(req)
	if err != nil {
		if handshakeRefused(err) {
			return nil, fmt.Errorf("%w: the current certificate was refused in the TLS handshake (%v)", errRenewalRefused, err)
		}
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxESTAnswer))
	if err != nil {
		return nil, fmt.Errorf("EST answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		reason := strings.TrimSpace(string(b))
		if len(reason) > 300 {
			reason = reason[:300] + "…"
		}
		err := fmt.Errorf("EST simplereenroll: HTTP %d: %s", resp.StatusCode, reason)
		if resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests {
			return nil, fmt.Errorf("%w: %v", errRenewalRefused, err)
		}
		return nil, err
	}
	der, err := decodeBase64Body(b)
	if err != nil {
		return nil, fmt.Errorf("EST answer: %w", err)
	}
	certs, err := parseCertsOnlyPKCS7(der)
	if err != nil {
		return nil, fmt.Errorf("EST answer: %w", err)
	}
	return certs, nil
}

// handshakeRefused tells a client certificate refused by the server's TLS
// alert from a network failure (crypto/tls does not export the alert).
func handshakeRefused(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "remote error: tls:") && strings.Contains(msg, "certificate")
}

// decodeBase64Body decodes an EST answer: base64 with line breaks, or,
// from servers that send binary, the DER itself.
func decodeBase64Body(b []byte) ([]byte, error) {
	if len(b) >= 2 && b[0] == 0x30 && b[1]&0x80 != 0 {
		return b, nil
	}
	text := bytes.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n':
			return -1
		}
		return r
	}, b)
	der, err := base64.RawStdEncoding.DecodeString(string(bytes.TrimRight(text, "=")))
	if err != nil {
		return nil, errors.New("not base64")
	}
	return der, nil
}

// oidSignedData is the CMS content type of a certs-only message.
var oidSignedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}

// parseCertsOnlyPKCS7 reads the certificates of a certs-only PKCS#7
// (CMS SignedData without signers, RFC 5652 section 5), as EST answers:
// ContentInfo{signedData, [0] EXPLICIT SignedData{version,
// digestAlgorithms, encapContentInfo, [0] IMPLICIT certificates, …}}.
func parseCertsOnlyPKCS7(der []byte) ([]*x509.Certificate, error) {
	var ci struct {
		ContentType asn1.ObjectIdentifier
		Content     asn1.RawValue `asn1:"explicit,tag:0"`
	}
	rest, err := asn1.Unmarshal(der, &ci)
	if err != nil {
		return nil, fmt.Errorf("not a PKCS#7 ContentInfo: %v", err)
	}
	if len(rest) != 0 {
		return nil, errors.New("data after the PKCS#7 message")
	}
	if !ci.ContentType.Equal(oidSignedData) {
		return nil, fmt.Errorf("PKCS#7 content type %v, want signedData", ci.ContentType)
	}
	var sd struct {
		Version          int
		DigestAlgorithms asn1.RawValue
		ContentInfo      asn1.RawValue
		Certificates     asn1.RawValue `asn1:"optional,tag:0"`
		CRLs             asn1.RawValue `asn1:"optional,tag:1"`
		SignerInfos      asn1.RawValue
	}
	if _, err := asn1.Unmarshal(ci.Content.Bytes, &sd); err != nil {
		return nil, fmt.Errorf("PKCS#7 SignedData: %v", err)
	}
	if len(sd.Certificates.Bytes) == 0 {
		return nil, errors.New("PKCS#7 message without certificates")
	}
	certs, err := x509.ParseCertificates(sd.Certificates.Bytes)
	if err != nil {
		return nil, fmt.Errorf("PKCS#7 certificates: %v", err)
	}
	return certs, nil
}
