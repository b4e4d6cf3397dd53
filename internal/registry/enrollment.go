package registry

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"
	"time"
)

// Enrollments are Azure IoT Hub Device Provisioning Service (DPS)
// records: an individual enrollment admits one device, known by its
// registration id and how it attests; an enrollment group admits every
// device whose evidence chains to the group's (a key the device's key is
// derived from, or a CA certificate). Both carry what the device gets
// once admitted: its hub (allocation), its initial twin and an optional
// payload, and what a repeated registration does (reprovisioning).

// EnrollmentStatus says whether an enrollment admits devices. A factory
// enrolls units disabled; the machine maker enables them.
type EnrollmentStatus string

// Enrollment statuses.
const (
	EnrollmentEnabled  EnrollmentStatus = "enabled"
	EnrollmentDisabled EnrollmentStatus = "disabled"
)

// Valid reports whether s is a known status.
func (s EnrollmentStatus) Valid() bool { return s == EnrollmentEnabled || s == EnrollmentDisabled }

// AttestationType is how a device of an enrollment proves who it is; the
// values are DPS's own names.
type AttestationType string

// Attestation mechanisms.
const (
	AttestationSymmetricKey AttestationType = "symmetricKey"
	AttestationX509         AttestationType = "x509"
	AttestationTPM          AttestationType = "tpm"
)

// EnrollmentReprovisionPolicy is what a registration of a device that is
// already assigned does (DPS's reprovisioning policy, named for its
// effect).
type EnrollmentReprovisionPolicy string

// Reprovisioning policies of enrollments.
const (
	// EnrollmentReprovisionNever keeps the device where it is: the
	// registration answers the current assignment, nothing changes.
	EnrollmentReprovisionNever EnrollmentReprovisionPolicy = "never"
	// EnrollmentReprovisionReset reassigns the device and resets its
	// twin to the enrollment's initial twin.
	EnrollmentReprovisionReset EnrollmentReprovisionPolicy = "reprovision-and-reset"
	// EnrollmentReprovisionMigrate reassigns the device and carries its
	// current twin over.
	EnrollmentReprovisionMigrate EnrollmentReprovisionPolicy = "reprovision-and-migrate"
)

// Valid reports whether p is a known policy.
func (p EnrollmentReprovisionPolicy) Valid() bool {
	return p == EnrollmentReprovisionNever || p == EnrollmentReprovisionReset || p == EnrollmentReprovisionMigrate
}

// AllocationPolicy picks the hub a device is assigned to; the values are
// DPS's names. The policies themselves live in internal/allocate.
type AllocationPolicy string

// Allocation policies.
const (
	// AllocationDefault: the instance's default policy.
	AllocationDefault AllocationPolicy = ""
	// AllocationStatic: the one hub named in IoTHubs.
	AllocationStatic AllocationPolicy = "static"
	// AllocationHashed: evenly weighted across the hubs.
	AllocationHashed AllocationPolicy = "hashed"
	// AllocationGeoLatency: the hub of lowest latency / the device's region.
	AllocationGeoLatency AllocationPolicy = "geoLatency"
	// AllocationCustom: a webhook decides.
	AllocationCustom AllocationPolicy = "custom"
)

// Valid reports whether p is a known policy.
func (p AllocationPolicy) Valid() bool {
	switch p {
	case AllocationDefault, AllocationStatic, AllocationHashed, AllocationGeoLatency, AllocationCustom:
		return true
	}
	return false
}

// SymmetricKeyAttestation holds the keys a device signs its SAS token
// with (individual enrollment), or the group keys device keys are derived
// from (enrollment group), base64. Stores keep them sealed at rest
// (internal/seal), as DESIGN.md asks of keys that must be used.
type SymmetricKeyAttestation struct {
	PrimaryKey   string `json:"primaryKey"`
	SecondaryKey string `json:"secondaryKey,omitempty"`
}

// Keys lists the keys a signature may be made with: the primary, and the
// secondary when set.
func (k *SymmetricKeyAttestation) Keys() []string {
	if k.SecondaryKey == "" {
		return []string{k.PrimaryKey}
	}
	return []string{k.PrimaryKey, k.SecondaryKey}
}

// X509Attestation identifies an individual enrollment's device by its
// leaf certificate, given as PEM, or by its thumbprint alone.
type X509Attestation struct {
	// CertificatePEM is the device's leaf certificate; optional when
	// Thumbprint is set.
	CertificatePEM string `json:"certificatePem,omitempty"`
	// Thumbprint is the lowercase hex SHA-256 of the certificate's DER,
	// the fingerprint used everywhere else in zerotouch; when both are
	// set they must agree.
	Thumbprint string `json:"thumbprint,omitempty"`
}

// X509CAAttestation admits the devices of a group whose certificate chains
// to the CA certificate, once the CA is verified.
//
// As in DPS, a CA admits nobody until whoever uploaded it proved that they
// hold its private key (proof of possession): the operator asks for a
// VerificationCode, signs a certificate whose subject common name is the
// code with the CA's key, and uploads it; the CA is then Verified. An
// operator may also vouch for a CA when creating the group (DPS's
// "certificate is already verified"). Replacing the CA certificate resets
// the verification (see CarryVerification).
type X509CAAttestation struct {
	CACertificatePEM string `json:"caCertificatePem"`
	// Verified: possession of the CA's private key was proved (or vouched
	// for by an operator); only then does the group admit devices.
	Verified bool `json:"verified"`
	// VerifiedAt is when Verified was set; nil when not verified.
	VerifiedAt *time.Time `json:"verifiedAt,omitempty"`
	// VerificationCode is the code the proof-of-possession certificate
	// must carry as its subject common name; empty when none is pending.
	VerificationCode string `json:"verificationCode,omitempty"`
}

// MaxVerificationCodeLen caps a proof-of-possession verification code (a
// common name is at most 64 characters).
const MaxVerificationCodeLen = 64

// NewVerificationCode returns a random proof-of-possession code: 20
// random bytes in upper-case hex, the form of DPS's codes.
func NewVerificationCode() string {
	var b [20]byte
	rand.Read(b[:])
	return strings.ToUpper(hex.EncodeToString(b[:]))
}

// CarryVerification keeps the verification state of prev when x holds
// the same CA certificate (a rewrite of the attestation that does not
// change the CA), and resets it when the CA is another one: a new CA must
// be verified again. A Verified set in x by the caller (an operator
// vouching for the new CA) is kept, stamped with now; the code is the
// server's alone and never taken from the caller.
func (x *X509CAAttestation) CarryVerification(prev *X509CAAttestation, now time.Time) {
	if prev != nil && sameCertificatePEM(prev.CACertificatePEM, x.CACertificatePEM) {
		vouched := x.Verified && !prev.Verified
		x.Verified, x.VerifiedAt, x.VerificationCode = prev.Verified, prev.VerifiedAt, prev.VerificationCode
		if vouched {
			x.MarkVerified(now)
		}
		return
	}
	x.VerificationCode = ""
	if x.Verified {
		x.MarkVerified(now)
	} else {
		x.VerifiedAt = nil
	}
}

// MarkVerified records that the CA is verified, at now; a pending code is
// consumed.
func (x *X509CAAttestation) MarkVerified(now time.Time) {
	t := now.UTC()
	x.Verified, x.VerifiedAt, x.VerificationCode = true, &t, ""
}

// sameCertificatePEM reports whether a and b hold the same certificate
// (same DER), whatever their PEM layout.
func sameCertificatePEM(a, b string) bool {
	ba, _ := pem.Decode([]byte(a))
	bb, _ := pem.Decode([]byte(b))
	if ba == nil || bb == nil {
		return a == b
	}
	return bytes.Equal(ba.Bytes, bb.Bytes)
}

// TPMAttestation identifies a device by its TPM 2.0 endorsement key.
type TPMAttestation struct {
	// EndorsementKey is the EK's public part, base64, as DPS takes it.
	EndorsementKey string `json:"endorsementKey"`
	// StorageRootKey is the SRK's public part, base64; optional.
	StorageRootKey string `json:"storageRootKey,omitempty"`
}

// Attestation is an individual enrollment's mechanism: Type, and the one
// matching field set.
type Attestation struct {
	Type         AttestationType          `json:"type"`
	SymmetricKey *SymmetricKeyAttestation `json:"symmetricKey,omitempty"`
	X509         *X509Attestation         `json:"x509,omitempty"`
	TPM          *TPMAttestation          `json:"tpm,omitempty"`
}

// GroupAttestation is an enrollment group's mechanism: a symmetric group
// key, or a CA certificate. (DPS has no TPM groups.)
type GroupAttestation struct {
	Type         AttestationType          `json:"type"`
	SymmetricKey *SymmetricKeyAttestation `json:"symmetricKey,omitempty"`
	X509CA       *X509CAAttestation       `json:"x509,omitempty"`
}

// InitialTwin is the twin a device starts with: tags (seen by operators
// only) and desired properties (sent to the device), each a JSON object
// kept as written so that numbers keep their precision.
type InitialTwin struct {
	Tags              json.RawMessage `json:"tags,omitempty"`
	DesiredProperties json.RawMessage `json:"desiredProperties,omitempty"`
}

// EnrollmentPolicies are the settings individual enrollments and groups
// share.
type EnrollmentPolicies struct {
	Status           EnrollmentStatus `json:"status"`
	AllocationPolicy AllocationPolicy `json:"allocationPolicy,omitempty"`
	// IoTHubs are the hub names the allocation chooses among; empty means
	// all; AllocationStatic needs exactly one.
	IoTHubs           []string                    `json:"iotHubs,omitempty"`
	ReprovisionPolicy EnrollmentReprovisionPolicy `json:"reprovisionPolicy"`
	InitialTwin       InitialTwin                 `json:"initialTwin"`
	// CustomPayload is returned to the device with its assignment (DPS's
	// "payload"): any JSON value, absent when empty.
	CustomPayload json.RawMessage `json:"payload,omitempty"`
}

// Enrollment is a DPS individual enrollment.
type Enrollment struct {
	OrgID string `json:"orgId"`
	// RegistrationID names the device to DPS (client id, SAS resource);
	// unique per organisation. See ValidateRegistrationID.
	RegistrationID string `json:"registrationId"`
	// DeviceID is the device's id on its hub; empty means the
	// registration id.
	DeviceID    string      `json:"deviceId,omitempty"`
	Attestation Attestation `json:"attestation"`
	EnrollmentPolicies
	// Version increases with every write; it is the enrollment's etag.
	// UpdateEnrollment applies only at the stored version.
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// EnrollmentGroup is a DPS enrollment group.
type EnrollmentGroup struct {
	OrgID string `json:"orgId"`
	// ID is the enrollment group id, chosen by the operator, unique per
	// organisation; same rules as a registration id.
	ID          string           `json:"enrollmentGroupId"`
	Attestation GroupAttestation `json:"attestation"`
	EnrollmentPolicies
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// Limits of enrollments.
const (
	// MaxRegistrationIDLen is DPS's limit on registration ids.
	MaxRegistrationIDLen = 128
	// MaxTwinJSON caps each of the initial twin's tags and desired
	// properties, and the custom payload (DPS's twin limit is 32 KiB).
	MaxTwinJSON = 32 << 10
	// MaxEnrollmentPEM caps a certificate PEM.
	MaxEnrollmentPEM = 16 << 10
	// MaxIoTHubs caps IoTHubs.
	MaxIoTHubs = 64
	// maxKeyB64 caps a base64 key or TPM key (a 4096-bit RSA EK in
	// TPM2B_PUBLIC form is under 1 KiB).
	maxKeyB64 = 4096
	// minSymmetricKeyLen is the shortest decoded symmetric key accepted:
	// DPS generates 64-byte keys and accepts 16 to 64.
	minSymmetricKeyLen = 16
	maxSymmetricKeyLen = 64
)

// ValidateRegistrationID checks a DPS registration id (or enrollment
// group id): 1 to 128 characters among lowercase ASCII letters, digits and
// - . _ : , ending with a letter, a digit or '-'. DPS treats ids without
// regard to case; zerotouch stores them in lower case, so an upper-case
// letter is refused here and callers that take a device's id lower-case
// it first.
func ValidateRegistrationID(kind, id string) error {
	if id == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalid, kind)
	}
	if len(id) > MaxRegistrationIDLen {
		return fmt.Errorf("%w: %s is longer than %d characters", ErrInvalid, kind, MaxRegistrationIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == ':':
		case 'A' <= c && c <= 'Z':
			return fmt.Errorf("%w: %s %q has upper-case letters: ids are case-insensitive and kept in lower case", ErrInvalid, kind, id)
		default:
			return fmt.Errorf("%w: %s may hold only lower-case letters, digits and - . _ :", ErrInvalid, kind)
		}
	}
	switch id[len(id)-1] {
	case '.', '_', ':':
		return fmt.Errorf("%w: %s must end with a letter, a digit or '-'", ErrInvalid, kind)
	}
	return nil
}

// Validate checks the enrollment's own fields (not uniqueness).
func (e *Enrollment) Validate() error {
	if err := ValidateRegistrationID("registration id", e.RegistrationID); err != nil {
		return err
	}
	if e.DeviceID != "" {
		if err := validateText("device id", e.DeviceID, MaxRegistrationIDLen); err != nil {
			return err
		}
	}
	if err := e.Attestation.Validate(); err != nil {
		return err
	}
	return e.EnrollmentPolicies.Validate()
}

// Validate checks the enrollment group's own fields (not uniqueness).
func (g *EnrollmentGroup) Validate() error {
	if err := ValidateRegistrationID("enrollment group id", g.ID); err != nil {
		return err
	}
	if err := g.Attestation.Validate(); err != nil {
		return err
	}
	return g.EnrollmentPolicies.Validate()
}

// Validate checks that exactly the field of Type is set, and its content.
func (a *Attestation) Validate() error {
	set := 0
	for _, ok := range []bool{a.SymmetricKey != nil, a.X509 != nil, a.TPM != nil} {
		if ok {
			set++
		}
	}
	if set != 1 {
		return fmt.Errorf("%w: an enrollment's attestation needs exactly one of symmetricKey, x509 and tpm (%d given)", ErrInvalid, set)
	}
	switch a.Type {
	case AttestationSymmetricKey:
		if a.SymmetricKey != nil {
			return a.SymmetricKey.Validate()
		}
	case AttestationX509:
		if a.X509 != nil {
			return a.X509.Validate()
		}
	case AttestationTPM:
		if a.TPM != nil {
			return a.TPM.Validate()
		}
	default:
		return fmt.Errorf("%w: unknown attestation type %q (want symmetricKey, x509 or tpm)", ErrInvalid, a.Type)
	}
	return fmt.Errorf("%w: attestation type %q but its settings are missing", ErrInvalid, a.Type)
}

// Validate checks that exactly the field of Type is set, and its content.
func (a *GroupAttestation) Validate() error {
	switch {
	case a.SymmetricKey != nil && a.X509CA != nil:
		return fmt.Errorf("%w: a group's attestation is a symmetric key or an X.509 CA, not both", ErrInvalid)
	case a.Type == AttestationSymmetricKey && a.SymmetricKey != nil:
		return a.SymmetricKey.Validate()
	case a.Type == AttestationX509 && a.X509CA != nil:
		return a.X509CA.Validate()
	case a.Type == AttestationSymmetricKey || a.Type == AttestationX509:
		return fmt.Errorf("%w: attestation type %q but its settings are missing", ErrInvalid, a.Type)
	}
	return fmt.Errorf("%w: unknown group attestation type %q (want symmetricKey or x509)", ErrInvalid, a.Type)
}

// Validate checks the keys: base64 of 16 to 64 bytes; the secondary key is
// optional but, when set, differs from the primary.
func (k *SymmetricKeyAttestation) Validate() error {
	if err := validateSymmetricKey("primary key", k.PrimaryKey); err != nil {
		return err
	}
	if k.SecondaryKey == "" {
		return nil
	}
	if err := validateSymmetricKey("secondary key", k.SecondaryKey); err != nil {
		return err
	}
	if k.SecondaryKey == k.PrimaryKey {
		return fmt.Errorf("%w: the secondary key equals the primary key", ErrInvalid)
	}
	return nil
}

func validateSymmetricKey(what, key string) error {
	if key == "" {
		return fmt.Errorf("%w: symmetric %s is empty", ErrInvalid, what)
	}
	b, err := decodeB64(what, key)
	if err != nil {
		return err
	}
	if len(b) < minSymmetricKeyLen || len(b) > maxSymmetricKeyLen {
		return fmt.Errorf("%w: symmetric %s is %d bytes, want %d to %d", ErrInvalid, what, len(b), minSymmetricKeyLen, maxSymmetricKeyLen)
	}
	return nil
}

// decodeB64 decodes standard base64 with padding, the form DPS shows and
// takes; the length is checked first so a huge value is not decoded.
func decodeB64(what, s string) ([]byte, error) {
	if len(s) > maxKeyB64 {
		return nil, fmt.Errorf("%w: %s is longer than %d characters", ErrInvalid, what, maxKeyB64)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not base64", ErrInvalid, what)
	}
	return b, nil
}

// Validate checks that the certificate parses and the thumbprint agrees.
func (x *X509Attestation) Validate() error {
	_, err := x.Fingerprint()
	return err
}

// Fingerprint returns the lowercase hex SHA-256 of the device
// certificate: Thumbprint, or computed from CertificatePEM.
func (x *X509Attestation) Fingerprint() (string, error) {
	if x.Thumbprint != "" {
		if len(x.Thumbprint) != 2*sha256.Size || strings.ToLower(x.Thumbprint) != x.Thumbprint {
			return "", fmt.Errorf("%w: thumbprint must be 64 lowercase hex digits (SHA-256)", ErrInvalid)
		}
		if _, err := hex.DecodeString(x.Thumbprint); err != nil {
			return "", fmt.Errorf("%w: thumbprint must be 64 lowercase hex digits (SHA-256)", ErrInvalid)
		}
	}
	if x.CertificatePEM == "" {
		if x.Thumbprint == "" {
			return "", fmt.Errorf("%w: an X.509 enrollment needs the device certificate or its thumbprint", ErrInvalid)
		}
		return x.Thumbprint, nil
	}
	cert, err := parseOneCertificate("device certificate", x.CertificatePEM)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(cert.Raw)
	fp := hex.EncodeToString(sum[:])
	if x.Thumbprint != "" && x.Thumbprint != fp {
		return "", fmt.Errorf("%w: the thumbprint does not match the device certificate (whose SHA-256 is %s)", ErrInvalid, fp)
	}
	return fp, nil
}

// Validate checks that the CA certificate parses and is a CA, and the
// verification state.
func (x *X509CAAttestation) Validate() error {
	if _, err := x.Certificate(); err != nil {
		return err
	}
	if len(x.VerificationCode) > MaxVerificationCodeLen {
		return fmt.Errorf("%w: verification code is longer than %d characters", ErrInvalid, MaxVerificationCodeLen)
	}
	for _, c := range x.VerificationCode {
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || c == '-') {
			return fmt.Errorf("%w: verification code may hold only letters, digits and '-'", ErrInvalid)
		}
	}
	if !x.Verified && x.VerifiedAt != nil {
		return fmt.Errorf("%w: verifiedAt is set but the CA is not verified", ErrInvalid)
	}
	return nil
}

// Certificate parses the CA certificate and checks that it is a CA
// (basic constraints CA:TRUE).
func (x *X509CAAttestation) Certificate() (*x509.Certificate, error) {
	cert, err := parseOneCertificate("CA certificate", x.CACertificatePEM)
	if err != nil {
		return nil, err
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, fmt.Errorf("%w: the group's certificate is not a CA certificate (basic constraints CA:TRUE)", ErrInvalid)
	}
	return cert, nil
}

// ParseCertificatePEM parses exactly one PEM CERTIFICATE block of at most
// MaxEnrollmentPEM bytes; what names it in errors (ErrInvalid).
func ParseCertificatePEM(what, s string) (*x509.Certificate, error) {
	return parseOneCertificate(what, s)
}

// parseOneCertificate parses exactly one PEM CERTIFICATE block.
func parseOneCertificate(what, s string) (*x509.Certificate, error) {
	if len(s) > MaxEnrollmentPEM {
		return nil, fmt.Errorf("%w: %s exceeds %d bytes", ErrInvalid, what, MaxEnrollmentPEM)
	}
	block, rest := pem.Decode([]byte(s))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%w: %s is not a PEM CERTIFICATE", ErrInvalid, what)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: %s: one certificate expected, found more data after it", ErrInvalid, what)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %s does not parse: %v", ErrInvalid, what, err)
	}
	return cert, nil
}

// Validate checks the endorsement key (required) and storage root key.
func (t *TPMAttestation) Validate() error {
	if t.EndorsementKey == "" {
		return fmt.Errorf("%w: TPM endorsement key is empty", ErrInvalid)
	}
	if _, err := decodeB64("TPM endorsement key", t.EndorsementKey); err != nil {
		return err
	}
	if t.StorageRootKey != "" {
		if _, err := decodeB64("TPM storage root key", t.StorageRootKey); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks status, policies, hubs, twin and payload.
func (p *EnrollmentPolicies) Validate() error {
	if !p.Status.Valid() {
		return fmt.Errorf("%w: unknown enrollment status %q (want enabled or disabled)", ErrInvalid, p.Status)
	}
	if !p.AllocationPolicy.Valid() {
		return fmt.Errorf("%w: unknown allocation policy %q (want static, hashed, geoLatency or custom, or empty for the default)", ErrInvalid, p.AllocationPolicy)
	}
	if !p.ReprovisionPolicy.Valid() {
		return fmt.Errorf("%w: unknown reprovisioning policy %q (want never, reprovision-and-reset or reprovision-and-migrate)", ErrInvalid, p.ReprovisionPolicy)
	}
	if len(p.IoTHubs) > MaxIoTHubs {
		return fmt.Errorf("%w: more than %d IoT hubs", ErrInvalid, MaxIoTHubs)
	}
	seen := map[string]bool{}
	for _, h := range p.IoTHubs {
		if err := ValidateName("IoT hub", h); err != nil {
			return err
		}
		if seen[h] {
			return fmt.Errorf("%w: IoT hub %q listed twice", ErrInvalid, h)
		}
		seen[h] = true
	}
	if p.AllocationPolicy == AllocationStatic && len(p.IoTHubs) != 1 {
		return fmt.Errorf("%w: the static allocation policy needs exactly one IoT hub (%d given)", ErrInvalid, len(p.IoTHubs))
	}
	if err := validateJSONObject("initial twin tags", p.InitialTwin.Tags); err != nil {
		return err
	}
	if err := validateJSONObject("initial twin desired properties", p.InitialTwin.DesiredProperties); err != nil {
		return err
	}
	if len(p.CustomPayload) > 0 {
		if len(p.CustomPayload) > MaxTwinJSON {
			return fmt.Errorf("%w: custom payload exceeds %d bytes", ErrInvalid, MaxTwinJSON)
		}
		if !json.Valid(p.CustomPayload) {
			return fmt.Errorf("%w: custom payload is not valid JSON", ErrInvalid)
		}
	}
	return nil
}

// validateJSONObject accepts empty or a JSON object of at most MaxTwinJSON bytes.
func validateJSONObject(what string, raw json.RawMessage) error {
	if len(raw) == 0 {
		return nil
	}
	if len(raw) > MaxTwinJSON {
		return fmt.Errorf("%w: %s exceed %d bytes", ErrInvalid, what, MaxTwinJSON)
	}
	if !json.Valid(raw) {
		return fmt.Errorf("%w: %s are not valid JSON", ErrInvalid, what)
	}
	if t := bytes.TrimLeft(raw, " \t\r\n"); t[0] != '{' {
		return fmt.Errorf("%w: %s must be a JSON object", ErrInvalid, what)
	}
	return nil
}

// ID scopes.
//
// A DPS instance is named to devices by its ID scope: "0ne" and eight
// upper-case hex digits (e.g. 0ne00000A0A). Each zerotouch organisation has
// one, generated on first use and never changed: devices carry it in
// their firmware.

// NewIDScope returns a random ID scope.
func NewIDScope() string {
	var b [4]byte
	rand.Read(b[:])
	return "0ne" + strings.ToUpper(hex.EncodeToString(b[:]))
}

// ValidIDScope reports whether s has the form of an ID scope, with
// upper-case hex digits (the form zerotouch stores and shows; compare a
// device's with strings.EqualFold or after upper-casing its digits).
func ValidIDScope(s string) bool {
	if len(s) != 11 || s[:3] != "0ne" {
		return false
	}
	for i := 3; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// CanonicalIDScope returns s in stored form ("0ne" and upper-case hex
// digits) when it is an ID scope in any case, and ok=false otherwise.
func CanonicalIDScope(s string) (string, bool) {
	if len(s) != 11 || !strings.EqualFold(s[:3], "0ne") {
		return "", false
	}
	c := "0ne" + strings.ToUpper(s[3:])
	return c, ValidIDScope(c)
}
