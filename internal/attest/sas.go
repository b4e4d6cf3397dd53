package attest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Errors of SAS token verification; test them with errors.Is. The error
// returned wraps one of them with a sentence saying what is wrong, safe to
// log (it never contains a key or a signature).
var (
	// ErrMalformed: the token does not have the shape of a DPS shared
	// access signature (prefix, fields, encoding, lengths).
	ErrMalformed = errors.New("malformed shared access signature")
	// ErrWrongResource: the token is well formed but for another resource
	// (sr) or another policy (skn) than the registration it was sent for.
	ErrWrongResource = errors.New("shared access signature for another resource")
	// ErrBadSignature: no candidate key produced the token's signature.
	ErrBadSignature = errors.New("shared access signature does not verify")
	// ErrExpired: the signature verifies but its expiry (se) is past.
	ErrExpired = errors.New("shared access signature expired")
	// ErrBadKey: a candidate key given by the caller is not a usable
	// base64 key. That is the server's (or operator's) fault, not the
	// device's: it must not be answered as a bad signature.
	ErrBadKey = errors.New("symmetric key is not valid base64")
)

// RegistrationKeyName is the skn of every DPS device-registration token:
// the device API has a single policy, "registration".
const RegistrationKeyName = "registration"

// Bounds on untrusted input. A DPS resource is at most an 11-character ID
// scope, "/registrations/" and a 128-character registration id; fully
// percent-encoded that is under 500 bytes. The limits leave room for
// other clients' encodings and stay small enough that a hostile token
// costs nothing to refuse.
const (
	// MaxSASTokenLen caps the whole token, prefix included.
	MaxSASTokenLen = 2048
	// MaxExpiryDigits caps se: ten digits reach the year 2286.
	MaxExpiryDigits = 12
	sasPrefix       = "SharedAccessSignature "
	sigLen          = sha256.Size
)

// DefaultClockSkew is how far in the past an expiry may be and still be
// accepted: devices without a real-time clock of good quality (no RTC,
// NTP just starting) sign with a clock a little behind the server's.
const DefaultClockSkew = 5 * time.Minute

// SASToken is a parsed shared access signature.
type SASToken struct {
	// RawResource is the sr field exactly as sent (percent-encoded or
	// not): what the client signed, see SASVerifier.Verify.
	RawResource string
	// Resource is RawResource percent-decoded.
	Resource string
	// Signature is the decoded HMAC-SHA256 of the token (32 bytes).
	Signature []byte
	// Expiry is se, in seconds since the Unix epoch, as a UTC time.
	Expiry time.Time
	// RawExpiry is se as sent, part of the signed string.
	RawExpiry string
	// KeyName is skn, percent-decoded; empty when absent.
	KeyName string
}

// ParseSASToken parses "SharedAccessSignature sr=…&sig=…&se=…[&skn=…]",
// fields in any order. It refuses, with ErrMalformed, tokens longer than
// MaxSASTokenLen, unknown or repeated fields, a missing sr, sig or se, bad
// percent-encoding, a signature that is not the base64 of 32 bytes, and an
// expiry that is not a plain decimal number of seconds.
func ParseSASToken(s string) (*SASToken, error) {
	malformed := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
	if len(s) > MaxSASTokenLen {
		return nil, malformed("longer than %d bytes", MaxSASTokenLen)
	}
	body, ok := strings.CutPrefix(s, sasPrefix)
	if !ok {
		return nil, malformed("does not start with %q", sasPrefix)
	}
	var t SASToken
	var sig string
	seen := map[string]bool{}
	for field := range strings.SplitSeq(body, "&") {
		name, value, ok := strings.Cut(field, "=")
		if !ok {
			return nil, malformed("field %q has no '='", clip(field))
		}
		if seen[name] {
			return nil, malformed("field %q appears twice", clip(name))
		}
		seen[name] = true
		switch name {
		case "sr":
			r, err := percentDecode(value)
			if err != nil || r == "" {
				return nil, malformed("sr is empty or badly percent-encoded")
			}
			t.RawResource, t.Resource = value, r
		case "sig":
			sig = value
		case "se":
			t.RawExpiry = value
		case "skn":
			k, err := percentDecode(value)
			if err != nil {
				return nil, malformed("skn is badly percent-encoded")
			}
			t.KeyName = k
		default:
			// Strict: a field we do not know could be one the client
			// expects us to honour (a different signing rule, say).
			return nil, malformed("unknown field %q", clip(name))
		}
	}
	switch {
	case !seen["sr"]:
		return nil, malformed("sr is missing")
	case !seen["sig"]:
		return nil, malformed("sig is missing")
	case !seen["se"]:
		return nil, malformed("se is missing")
	}

	// The signature is base64 (standard alphabet, padded), URL-encoded by
	// the SDKs; a literal '+' is kept as '+' (percent-decoding, not form
	// decoding), so an unencoded signature parses too.
	decoded, err := percentDecode(sig)
	if err != nil {
		return nil, malformed("sig is badly percent-encoded")
	}
	if len(decoded) != base64.StdEncoding.EncodedLen(sigLen) {
		return nil, malformed("sig is not the base64 of an HMAC-SHA256")
	}
	t.Signature, err = base64.StdEncoding.Strict().DecodeString(decoded)
	if err != nil || len(t.Signature) != sigLen {
		return nil, malformed("sig is not the base64 of an HMAC-SHA256")
	}

	if n := len(t.RawExpiry); n == 0 || n > MaxExpiryDigits {
		return nil, malformed("se must be 1 to %d decimal digits", MaxExpiryDigits)
	}
	for _, c := range []byte(t.RawExpiry) {
		if c < '0' || c > '9' {
			// ParseInt alone would accept a sign.
			return nil, malformed("se is not a decimal number of seconds")
		}
	}
	secs, err := strconv.ParseInt(t.RawExpiry, 10, 64)
	if err != nil {
		return nil, malformed("se is out of range")
	}
	t.Expiry = time.Unix(secs, 0).UTC()
	return &t, nil
}

// asciiEqualFold compares ignoring ASCII case only: strings.EqualFold
// would also fold Unicode look-alikes (the Kelvin sign K to k), which no
// DPS id may contain.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// clip shortens attacker-chosen text quoted in an error.
func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}

// percentDecode decodes %XX escapes (either case) and nothing else: '+'
// stays '+', as encodeURIComponent and Python's quote produce no '+' for
// a space and base64 signatures contain literal '+' when left unencoded.
func percentDecode(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", errors.New("truncated escape")
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return "", errors.New("bad escape")
		}
		b.WriteByte(hi<<4 | lo)
		i += 2
	}
	return b.String(), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// URLEncode percent-encodes s as JavaScript's encodeURIComponent with the
// SDKs' "strict" addition (also ! ' ( ) *): everything but ASCII letters,
// digits and - _ . ~ becomes %XX with upper-case hex. It is the encoding of
// the sig field.
func URLEncode(s string) string {
	const hexdigits = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexdigits[c>>4])
		b.WriteByte(hexdigits[c&15])
	}
	return b.String()
}

// RegistrationResource is the resource URI a DPS device-registration
// token is for: "<idScope>/registrations/<registrationId>".
func RegistrationResource(idScope, registrationID string) string {
	return idScope + "/registrations/" + registrationID
}

// DecodeKey decodes a base64 symmetric key (standard alphabet, padding
// optional, as the Azure portal and SDKs produce). An empty key is refused.
func DecodeKey(key string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		k, err = base64.RawStdEncoding.DecodeString(key)
	}
	if err != nil || len(k) == 0 {
		return nil, ErrBadKey
	}
	return k, nil
}

// DeriveDeviceKey is the key of one device of a symmetric-key enrollment
// group, as DPS and every Azure SDK compute it:
// base64(HMAC-SHA256(base64decode(groupKey), registrationID)).
func DeriveDeviceKey(groupKey, registrationID string) (string, error) {
	k, err := DecodeKey(groupKey)
	if err != nil {
		return "", fmt.Errorf("derive device key: group key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(mac(k, registrationID)), nil
}

func mac(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// Sign makes a token for resource, as the Azure IoT Node.js SDK does
// (SharedAccessSignature.create): sr is resource as given, the signed
// string is resource + "\n" + expiry in Unix seconds, sig is the
// URL-encoded base64 HMAC-SHA256 of it under the decoded key, and skn is
// keyName (left out when empty). For tests and the device agent.
func Sign(resource, keyName, key string, expiry time.Time) (string, error) {
	k, err := DecodeKey(key)
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	se := strconv.FormatInt(expiry.Unix(), 10)
	sig := base64.StdEncoding.EncodeToString(mac(k, resource+"\n"+se))
	tok := sasPrefix + "sr=" + resource + "&sig=" + URLEncode(sig) + "&se=" + se
	if keyName != "" {
		tok += "&skn=" + URLEncode(keyName)
	}
	return tok, nil
}

// SASVerifier verifies shared access signatures: DPS registration tokens
// (Verify) and IoT Hub device tokens (VerifyDevice). The zero value uses
// the system clock and DefaultClockSkew.
type SASVerifier struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// ClockSkew is how long after its expiry a token is still accepted:
	// 0 means DefaultClockSkew, a negative value none.
	ClockSkew time.Duration
}

// Verify checks that token is a valid DPS registration token for
// resource (see RegistrationResource) signed with one of keys (base64:
// an enrollment's primary and secondary key, or the keys derived for the
// device from its group's), and returns it parsed.
//
// The checks, in order: the token parses (ErrMalformed); skn is
// "registration" and sr, percent-decoded, equals resource ignoring ASCII
// case (ErrWrongResource) — DPS ID scopes and registration ids are
// case-insensitive; the signature matches under one key (ErrBadSignature);
// the expiry is not past, give or take the clock skew (ErrExpired).
//
// What is signed is sr exactly as it appears in the token, + "\n" + se:
// the Node.js SDK sends and signs sr unencoded, the Python SDK and DPS's
// documented sample send and sign it percent-encoded; both sign what they
// send. DPS's documentation also describes the signed resource in lower
// case, so the lower-cased sr is accepted too. Both candidates are
// deterministic functions of the token, so the second only doubles the
// (2^-256) chance of a forged signature.
//
// Expiry is checked after the signature on purpose: only the holder of
// the key learns that its token expired (most often a device clock that
// is wrong), a forger learns nothing but ErrBadSignature.
func (v SASVerifier) Verify(token, resource string, keys ...string) (*SASToken, error) {
	return v.verify(token, resource, RegistrationKeyName, keys)
}

// VerifyDevice checks an IoT Hub device token: as Verify, but for the
// resource "<hub>/devices/<deviceId>" (see DeviceResource) and without a
// key name — device tokens are signed with the device's own key, not a
// policy's. The SDKs send and sign sr percent-encoded.
func (v SASVerifier) VerifyDevice(token, resource string, keys ...string) (*SASToken, error) {
	return v.verify(token, resource, "", keys)
}

// DeviceResource is the resource URI of an IoT Hub device token.
func DeviceResource(hub, deviceID string) string { return hub + "/devices/" + deviceID }

func (v SASVerifier) verify(token, resource, keyName string, keys []string) (*SASToken, error) {
	t, err := ParseSASToken(token)
	if err != nil {
		return nil, err
	}
	if t.KeyName != keyName {
		return nil, fmt.Errorf("%w: skn is %q, want %q", ErrWrongResource, clip(t.KeyName), keyName)
	}
	if !asciiEqualFold(t.Resource, resource) {
		return nil, fmt.Errorf("%w: sr is %q, want %q", ErrWrongResource, clip(t.Resource), resource)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no key to verify with", ErrBadKey)
	}
	decoded := make([][]byte, len(keys))
	for i, key := range keys {
		if decoded[i], err = DecodeKey(key); err != nil {
			return nil, fmt.Errorf("verify: key %d: %w", i+1, err)
		}
	}
	candidates := []string{t.RawResource + "\n" + t.RawExpiry}
	if lower := strings.ToLower(t.RawResource); lower != t.RawResource {
		candidates = append(candidates, lower+"\n"+t.RawExpiry)
	}
	// Every MAC is computed and compared in constant time: how long a
	// refusal takes says nothing about which key or byte was close.
	ok := false
	for _, k := range decoded {
		for _, c := range candidates {
			if hmac.Equal(mac(k, c), t.Signature) {
				ok = true
			}
		}
	}
	if !ok {
		return nil, ErrBadSignature
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	skew := v.ClockSkew
	switch {
	case skew == 0:
		skew = DefaultClockSkew
	case skew < 0:
		skew = 0
	}
	if n := now(); n.After(t.Expiry.Add(skew)) {
		return nil, fmt.Errorf("%w: at %s (now %s)", ErrExpired, t.Expiry.Format(time.RFC3339), n.UTC().Format(time.RFC3339))
	}
	return t, nil
}
