package est

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/zerotouch/zerotouch/internal/pki"
	"github.com/zerotouch/zerotouch/internal/provision"
)

// PathPrefix is where EST lives (RFC 7030 section 3.2.2); mount Handler
// there: mux.Handle(est.PathPrefix, h).
const PathPrefix = "/.well-known/est/"

// MaxRequestSize bounds a simplereenroll body. A request is at most a
// few KiB (an RSA-8192 one about 2.3 KiB in base64).
const MaxRequestSize = 64 << 10

// Media types of RFC 7030.
const (
	ContentTypePKCS10 = "application/pkcs10"
	ContentTypeCerts  = "application/pkcs7-mime; smime-type=certs-only"
)

// Errors a Renewer returns to choose the answer; wrap them with the reason,
// which is sent to the device: fmt.Errorf("%w: certificate revoked",
// est.ErrNotAuthorized).
var (
	// ErrNotAuthorized: the client certificate may not be renewed (not
	// issued by this CA, unknown, revoked, expired). 403.
	ErrNotAuthorized = errors.New("the client certificate may not be renewed")
	// ErrBadRequest: the request is refused for what it asks. 400, as is an
	// error wrapping pki.ErrBadCSR.
	ErrBadRequest = errors.New("renewal request refused")
	// ErrUnavailable: renewal is switched off or cannot be served now. 503.
	ErrUnavailable = errors.New("certificate renewal is not available")
)

// Renewer issues the certificate that renews current, the client certificate
// the device authenticated with, from the device's CSR (DER).
//
// Renew verifies current itself: the listener requests client
// certificates without verifying them. source is the client's IP address.
// Its errors choose the answer (ErrNotAuthorized, ErrBadRequest,
// pki.ErrBadCSR, ErrUnavailable; anything else is a 500) and, but for a
// 500, their message is sent to the device.
type Renewer interface {
	Renew(ctx context.Context, current *x509.Certificate, csrDER []byte, source string) (*x509.Certificate, error)
	// CACertificates is the chain devices trust: the issuing CA, then the root.
	CACertificates() []*x509.Certificate
}

// Handler serves EST under PathPrefix; see the package documentation.
type Handler struct {
	renewer Renewer
	log     *slog.Logger
}

// NewHandler returns a Handler renewing through r; a nil r answers 503 to
// every operation but csrattrs. log may be nil (discarded).
func NewHandler(r Renewer, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{renewer: r, log: log}
}

// ServeHTTP dispatches on the operation, the path segment after PathPrefix.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	op, ok := strings.CutPrefix(r.URL.Path, PathPrefix)
	switch {
	case !ok:
		h.refuse(w, r, "", http.StatusNotFound, "not an EST path: EST operations are under "+PathPrefix)
	case strings.Contains(strings.TrimSuffix(op, "/"), "/"):
		h.refuse(w, r, op, http.StatusNotFound, "CA labels are not supported: this server has one CA; use "+PathPrefix+"<operation>")
	case op == "cacerts":
		if h.allow(w, r, op, http.MethodGet, http.MethodHead) {
			h.caCerts(w, r)
		}
	case op == "simplereenroll":
		if h.allow(w, r, op, http.MethodPost) {
			h.simpleReenroll(w, r)
		}
	case op == "csrattrs":
		if h.allow(w, r, op, http.MethodGet, http.MethodHead) {
			// No attributes required (RFC 7030 section 4.5.2).
			w.WriteHeader(http.StatusNoContent)
		}
	case op == "simpleenroll":
		h.refuse(w, r, op, http.StatusNotFound, "simpleenroll is not served: devices get their first certificate by provisioning; renew with simplereenroll")
	case op == "serverkeygen" || op == "fullcmc":
		h.refuse(w, r, op, http.StatusNotFound, op+" is not served: only cacerts, simplereenroll and csrattrs are")
	default:
		h.refuse(w, r, op, http.StatusNotFound, "unknown EST operation: cacerts, simplereenroll and csrattrs are served")
	}
}

// allow answers 405 unless r uses one of methods.
func (h *Handler) allow(w http.ResponseWriter, r *http.Request, op string, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	h.refuse(w, r, op, http.StatusMethodNotAllowed, op+" takes "+strings.Join(methods, " or "))
	return false
}

func (h *Handler) caCerts(w http.ResponseWriter, r *http.Request) {
	if h.renewer == nil {
		h.refuse(w, r, "cacerts", http.StatusServiceUnavailable, ErrUnavailable.Error())
		return
	}
	chain := h.renewer.CACertificates()
	if len(chain) == 0 {
		h.refuse(w, r, "cacerts", http.StatusServiceUnavailable, "the CA certificates are not available")
		return
	}
	h.writeCerts(w, r, "cacerts", chain)
}

func (h *Handler) simpleReenroll(w http.ResponseWriter, r *http.Request) {
	const op = "simplereenroll"
	if h.renewer == nil {
		h.refuse(w, r, op, http.StatusServiceUnavailable, ErrUnavailable.Error())
		return
	}
	// Authentication first: nothing of an anonymous client's body is read.
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		// No WWW-Authenticate: no HTTP scheme names TLS client certificates.
		h.refuse(w, r, op, http.StatusUnauthorized, "a client certificate is required: connect with the certificate to renew and its key")
		return
	}
	current := r.TLS.PeerCertificates[0]
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != ContentTypePKCS10 {
		h.refuse(w, r, op, http.StatusUnsupportedMediaType, "Content-Type must be "+ContentTypePKCS10, certAttrs(current)...)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestSize))
	if err != nil {
		if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
			h.refuse(w, r, op, http.StatusRequestEntityTooLarge, fmt.Sprintf("request larger than %d bytes", MaxRequestSize), certAttrs(current)...)
			return
		}
		h.refuse(w, r, op, http.StatusBadRequest, "request body could not be read", certAttrs(current)...)
		return
	}
	csr, err := DecodeRequest(body)
	if err != nil {
		h.refuse(w, r, op, http.StatusBadRequest, err.Error(), certAttrs(current)...)
		return
	}
	cert, err := h.renewer.Renew(r.Context(), current, csr, provision.SourceHost(r.RemoteAddr))
	if err == nil && cert == nil {
		err = errors.New("the Renewer returned no certificate and no error")
	}
	if err != nil {
		switch status := statusOf(err); {
		case status != http.StatusInternalServerError:
			h.refuse(w, r, op, status, err.Error(), certAttrs(current)...)
		case r.Context().Err() != nil:
			// The client went away: nothing failed on our side.
			h.log.InfoContext(r.Context(), "EST renewal abandoned by the client", append(certAttrs(current), "source", provision.SourceHost(r.RemoteAddr))...)
		default:
			h.log.ErrorContext(r.Context(), "EST renewal failed", append(certAttrs(current), "source", provision.SourceHost(r.RemoteAddr), "error", err)...)
			writeText(w, status, "the certificate could not be renewed: internal error; try again later")
		}
		return
	}
	h.log.DebugContext(r.Context(), "EST renewal", append(certAttrs(current), "source", provision.SourceHost(r.RemoteAddr),
		"newSerial", pki.SerialHex(cert.SerialNumber), "notAfter", cert.NotAfter)...)
	h.writeCerts(w, r, op, []*x509.Certificate{cert})
}

// statusOf maps a Renewer's error to the answer's status.
func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrNotAuthorized):
		return http.StatusForbidden
	case errors.Is(err, ErrBadRequest), errors.Is(err, pki.ErrBadCSR):
		return http.StatusBadRequest
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// writeCerts answers 200 with certs as a base64 certs-only PKCS#7.
func (h *Handler) writeCerts(w http.ResponseWriter, r *http.Request, op string, certs []*x509.Certificate) {
	der, err := pki.CertsOnlyPKCS7(certs)
	if err != nil {
		h.log.ErrorContext(r.Context(), "EST answer not encoded", "op", op, "error", err)
		writeText(w, http.StatusInternalServerError, "the answer could not be encoded: internal error")
		return
	}
	body := encodeBase64Lines(der)
	w.Header().Set("Content-Type", ContentTypeCerts)
	w.Header().Set("Content-Transfer-Encoding", "base64")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

// refuse answers status with msg and logs the refusal at info.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, op string, status int, msg string, attrs ...any) {
	msg = sanitize(msg)
	h.log.InfoContext(r.Context(), "EST request refused", append([]any{
		"op", op, "method", r.Method, "source", provision.SourceHost(r.RemoteAddr), "status", status, "reason", msg,
	}, attrs...)...)
	writeText(w, status, msg)
}

func writeText(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	io.WriteString(w, msg+"\n")
}

// certAttrs names a client certificate in a log line.
func certAttrs(c *x509.Certificate) []any {
	return []any{
		"subject", c.Subject.CommonName,
		"serial", pki.SerialHex(c.SerialNumber),
		"fingerprint", pki.Fingerprint(c.Raw),
	}
}

// maxReason bounds the reason sent to a device: one sentence, not a dump.
const maxReason = 300

// sanitize keeps a reason to one printable line of bounded length, whatever
// a Renewer's error holds.
func sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxReason {
		cut := maxReason
		for cut > 0 && s[cut]&0xc0 == 0x80 { // not inside a UTF-8 sequence
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// DecodeRequest reads a simplereenroll body: the base64 of a DER PKCS#10
// request (blanks and line breaks ignored, padding optional) or the DER
// itself (see the package documentation), and returns the DER. It checks
// only that the result is one DER SEQUENCE; the Renewer checks the request.
// Its errors are sentences for the device.
func DecodeRequest(body []byte) ([]byte, error) {
	if len(body) > MaxRequestSize {
		return nil, fmt.Errorf("request larger than %d bytes", MaxRequestSize)
	}
	// DER: SEQUENCE with a long-form length. Base64 text is 7-bit, so a
	// second byte with the high bit set cannot be base64.
	if len(body) >= 2 && body[0] == 0x30 && body[1]&0x80 != 0 {
		return checkDER(body)
	}
	text := bytes.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n':
			return -1
		}
		return r
	}, body)
	if len(text) == 0 {
		return nil, errors.New("empty request: send the base64 of a DER PKCS#10 certificate request")
	}
	if bytes.HasPrefix(text, []byte("-----BEGIN")) {
		return nil, errors.New("a PEM request is not EST: send its base64 body without the BEGIN and END lines, or the DER request")
	}
	der, err := base64.RawStdEncoding.Strict().DecodeString(string(bytes.TrimRight(text, "=")))
	if err != nil {
		return nil, errors.New("the body is not base64: send the base64 of a DER PKCS#10 certificate request")
	}
	return checkDER(der)
}

// checkDER accepts one DER SEQUENCE and nothing after it.
func checkDER(der []byte) ([]byte, error) {
	var seq asn1.RawValue
	rest, err := asn1.Unmarshal(der, &seq)
	if err != nil || seq.Class != asn1.ClassUniversal || seq.Tag != asn1.TagSequence || !seq.IsCompound {
		return nil, errors.New("the body does not hold a DER PKCS#10 certificate request")
	}
	if len(rest) != 0 {
		return nil, errors.New("data after the certificate request: send one request")
	}
	return der, nil
}

// encodeBase64Lines is base64 in lines of 64 characters, each ended by a
// bare LF: GNU base64 -d refuses the CR of MIME's CRLF.
func encodeBase64Lines(der []byte) []byte {
	enc := base64.StdEncoding.EncodeToString(der)
	var b bytes.Buffer
	b.Grow(len(enc) + len(enc)/64 + 1)
	for len(enc) > 64 {
		b.WriteString(enc[:64])
		b.WriteByte('\n')
		enc = enc[64:]
	}
	b.WriteString(enc)
	b.WriteByte('\n')
	return b.Bytes()
}
