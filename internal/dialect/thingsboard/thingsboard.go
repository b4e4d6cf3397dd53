// Package thingsboard speaks ThingsBoard's device provisioning protocol: the
// JSON request a device sends on MQTT topic /provision/request or to
// POST /api/v1/provision, and the answer ThingsBoard gives. It holds wire
// formats only; decisions are the provision package's.
package thingsboard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// Dialect is the name recorded in audit events and metrics.
const Dialect = "thingsboard"

// MQTT names of the provisioning exchange.
const (
	ProvisionUsername = provision.ReservedUserName
	RequestTopic      = "/provision/request"
	ResponseTopic     = "/provision/response"
)

// MaxRequestSize caps a provisioning request; an X.509 PEM is the largest
// legitimate field.
const MaxRequestSize = 32 << 10

// Request is the JSON body of a provisioning request, as ThingsBoard
// devices send it.
type Request struct {
	DeviceName            string `json:"deviceName"`
	ProvisionDeviceKey    string `json:"provisionDeviceKey"`
	ProvisionDeviceSecret string `json:"provisionDeviceSecret"`
	CredentialsType       string `json:"credentialsType,omitempty"`
	Token                 string `json:"token,omitempty"`
	ClientID              string `json:"clientId,omitempty"`
	Username              string `json:"username,omitempty"`
	Password              string `json:"password,omitempty"`
	Hash                  string `json:"hash,omitempty"`
}

// Response is ThingsBoard's answer. Field order matches ThingsBoard's own
// (errorMsg, status on failure; credentialsValue, credentialsType, status on success).
type Response struct {
	ErrorMsg         string `json:"errorMsg,omitempty"`
	CredentialsValue any    `json:"credentialsValue,omitempty"`
	CredentialsType  string `json:"credentialsType,omitempty"`
	Status           string `json:"status"`
	// Reason is zerotouch's own explanation of a refusal; ThingsBoard
	// clients ignore fields they do not know.
	Reason string `json:"reason,omitempty"`
}

// MQTTBasicValue is credentialsValue for MQTT_BASIC; note ThingsBoard's
// spelling "userName".
type MQTTBasicValue struct {
	ClientID string `json:"clientId,omitempty"`
	UserName string `json:"userName,omitempty"`
	Password string `json:"password,omitempty"`
}

// Status values and messages, exactly as ThingsBoard sends them.
const (
	StatusSuccess  = "SUCCESS"
	StatusNotFound = "NOT_FOUND"
	StatusFailure  = "FAILURE"

	msgNotFound = "Provision data was not found!"
	msgFailure  = "Failed to provision device!"
)

// Decode parses a request strictly: one JSON object, valid UTF-8, only the
// fields ThingsBoard defines, within MaxRequestSize. The error says what is
// wrong in words a device developer can act on.
func Decode(payload []byte) (Request, error) {
	var r Request
	if len(payload) > MaxRequestSize {
		return r, fmt.Errorf("request is larger than %d bytes", MaxRequestSize)
	}
	if !utf8.Valid(payload) {
		return r, errors.New("request is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typeErr) && typeErr.Field == "":
			return r, errors.New("request is not a valid provisioning JSON object: it must be an object")
		case errors.As(err, &typeErr):
			return r, fmt.Errorf("request is not a valid provisioning JSON object: field %q must be a string", typeErr.Field)
		}
		return r, fmt.Errorf("request is not a valid provisioning JSON object: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if _, err := dec.Token(); err != io.EOF {
		return r, errors.New("request has data after the JSON object")
	}
	return r, nil
}

// ToProvision converts a decoded request for the pipeline.
func (r Request) ToProvision(source string) provision.Request {
	return provision.Request{
		Dialect:         Dialect,
		Source:          source,
		ProvisionKey:    r.ProvisionDeviceKey,
		ProvisionSecret: r.ProvisionDeviceSecret,
		DeviceName:      r.DeviceName,
		Credentials: provision.CredentialsRequest{
			Type:        registry.CredentialType(r.CredentialsType),
			Token:       r.Token,
			ClientID:    r.ClientID,
			Username:    r.Username,
			Password:    r.Password,
			Certificate: r.Hash,
		},
	}
}

// Success encodes a successful result.
func Success(res *provision.Result) Response {
	c := res.Credentials
	out := Response{Status: StatusSuccess, CredentialsType: string(c.Type)}
	switch c.Type {
	case registry.CredentialAccessToken:
		out.CredentialsValue = c.Token
	case registry.CredentialMQTTBasic:
		out.CredentialsValue = MQTTBasicValue{ClientID: c.ClientID, UserName: c.Username, Password: c.Password}
	case registry.CredentialX509:
		out.CredentialsValue = c.Certificate
	}
	return out
}

// Failure encodes a refusal: NOT_FOUND when the profile could not be used
// (unknown key, wrong secret, provisioning disabled), FAILURE otherwise —
// ThingsBoard's own mapping.
func Failure(err error) Response {
	var pe *provision.Error
	reason := "the server could not complete the request"
	if errors.As(err, &pe) {
		reason = pe.Msg
	}
	switch provision.ReasonOf(err) {
	case provision.ReasonBadKeyOrSecret, provision.ReasonProvisioningDisabled:
		return Response{ErrorMsg: msgNotFound, Status: StatusNotFound, Reason: reason}
	}
	return Response{ErrorMsg: msgFailure, Status: StatusFailure, Reason: reason}
}

// Encode marshals a response.
func (r Response) Encode() []byte {
	b, err := json.Marshal(r)
	if err != nil { // only strings and a struct of strings: cannot happen
		panic(err)
	}
	return b
}
