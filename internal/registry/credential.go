package registry

import (
	"time"

	"github.com/zerotouch/zerotouch/internal/secret"
)

// CredentialType names a kind of device credential, spelled as ThingsBoard does.
type CredentialType string

// Credential types.
const (
	CredentialAccessToken CredentialType = "ACCESS_TOKEN"
	CredentialMQTTBasic   CredentialType = "MQTT_BASIC"
	CredentialX509        CredentialType = "X509_CERTIFICATE"
	// CredentialSymmetricKey is an Azure IoT Hub device's symmetric key
	// (a device registered through DPS with symmetric-key attestation): the
	// device signs a SAS token with it at every connect.
	CredentialSymmetricKey CredentialType = "SYMMETRIC_KEY"
)

// Valid reports whether t is a known type.
func (t CredentialType) Valid() bool {
	return t == CredentialAccessToken || t == CredentialMQTTBasic || t == CredentialX509 || t == CredentialSymmetricKey
}

// CredentialStatus is active or revoked; revoked credentials stay for the audit trail.
type CredentialStatus string

// Credential statuses.
const (
	CredentialActive  CredentialStatus = "active"
	CredentialRevoked CredentialStatus = "revoked"
)

// Credential is one way a device proves itself to the hub.
//
// LookupKey is what the hub searches by at CONNECT; it is unique among
// active credentials of the same type:
//   - ACCESS_TOKEN: secret.LookupHash(token), the token itself is never stored;
//   - MQTT_BASIC: MQTTBasicLookupKey(clientID, username);
//   - X509_CERTIFICATE: the lowercase hex SHA-256 fingerprint of the DER certificate;
//   - SYMMETRIC_KEY: the device's id on its hub (HubDeviceLookupKey), the
//     client id of its CONNECT.
type Credential struct {
	ID       string         `json:"id"`
	OrgID    string         `json:"orgId"`
	DeviceID string         `json:"deviceId"`
	Type     CredentialType `json:"credentialsType"`
	// LookupKey: see the type's doc. Not secret for MQTT_BASIC and X.509,
	// a hash for tokens; never returned by the API for tokens.
	LookupKey string `json:"-"`
	// ClientID and Username are set for MQTT_BASIC.
	ClientID string `json:"clientId,omitempty"`
	Username string `json:"userName,omitempty"`
	// SecretHash is secret.Hash (generated) or secret.HashSlow (chosen) of the
	// MQTT_BASIC password; empty when the
	// credential has no password.
	SecretHash string `json:"-"`
	// CertificatePEM is the device's certificate when it gave one.
	CertificatePEM string `json:"certificatePem,omitempty"`
	// Fingerprint is the X.509 SHA-256 fingerprint (hex), for display.
	Fingerprint string `json:"fingerprint,omitempty"`
	// SymmetricKey holds the keys of a SYMMETRIC_KEY credential. Stores
	// keep it sealed (internal/seal) and return it only from
	// FindActiveCredential, where the hub needs it to verify a SAS token.
	SymmetricKey *SymmetricKeyAttestation `json:"-"`
	Status       CredentialStatus         `json:"status"`
	CreatedAt    time.Time                `json:"createdAt"`
	RevokedAt    *time.Time               `json:"revokedAt,omitempty"`
}

// UserKey is the MQTT user name this credential claims, hashed: the token of
// an ACCESS_TOKEN (devices send it as the user name), the user name of an
// MQTT_BASIC credential that has one; empty otherwise. Tokens and user names
// share one name space: stores keep UserKey unique among active credentials
// (a clash is ConflictError{What: "credential"}), so a CONNECT's user name
// designates at most one credential and no device can register another's
// user name as its token.
func (c *Credential) UserKey() string {
	switch {
	case c.Type == CredentialAccessToken:
		return c.LookupKey // already secret.LookupHash(token)
	case c.Type == CredentialMQTTBasic && c.Username != "":
		return secret.LookupHash(c.Username)
	}
	return ""
}

// MQTTBasicLookupKey is the LookupKey of an MQTT_BASIC credential. Either
// part may be empty (ThingsBoard authenticates by client id alone, by user
// name and password alone, or by all three). The separator is a newline,
// which credential validation refuses inside either part, and which unlike
// NUL every database can store.
func MQTTBasicLookupKey(clientID, username string) string {
	return "c=" + clientID + "\nu=" + username
}

// HubDeviceLookupKey is the LookupKey of a SYMMETRIC_KEY credential: the
// device's id on its hub, which Azure IoT Hub treats case-sensitively.
func HubDeviceLookupKey(hubDeviceID string) string { return hubDeviceID }
