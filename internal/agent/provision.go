package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// ThingsBoard's provisioning topics and user name.
const (
	provisionUser          = "provision"
	provisionRequestTopic  = "/provision/request"
	provisionResponseTopic = "/provision/response"
)

// ErrRefused marks a refusal by the server that retrying will not change:
// a provisioning request answered with a status other than SUCCESS, or
// credentials refused again after provisioning anew. Run returns it
// (wrapped) and the process should exit non-zero.
var ErrRefused = errors.New("refused by the server")

// ProvisionError is a provisioning request the server answered with a
// failure status.
type ProvisionError struct {
	Status   string // NOT_FOUND, FAILURE, …
	ErrorMsg string // ThingsBoard's message
	Reason   string // zerotouch's explanation, when the server gives one
}

func (e *ProvisionError) Error() string {
	s := fmt.Sprintf("provisioning refused: %s", e.Status)
	if e.ErrorMsg != "" {
		s += ": " + e.ErrorMsg
	}
	if e.Reason != "" {
		s += " (" + e.Reason + ")"
	}
	return s
}

// Is makes errors.Is(err, ErrRefused) true for a ProvisionError.
func (e *ProvisionError) Is(target error) bool { return target == ErrRefused }

// provisionRequest is ThingsBoard's provisioning request.
type provisionRequest struct {
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

// provisionResponse is ThingsBoard's answer; credentialsValue is a string
// (token, certificate) or, for MQTT_BASIC, {"clientId","userName","password"}.
type provisionResponse struct {
	Status           string          `json:"status"`
	CredentialsType  string          `json:"credentialsType"`
	CredentialsValue json.RawMessage `json:"credentialsValue"`
	ErrorMsg         string          `json:"errorMsg"`
	Reason           string          `json:"reason"`
}

// request builds the provisioning request from the configuration.
func (a *Agent) request() (*provisionRequest, error) {
	c := a.cfg
	r := &provisionRequest{
		DeviceName:            c.Device,
		ProvisionDeviceKey:    c.Provision.Key,
		ProvisionDeviceSecret: c.Provision.Secret,
		CredentialsType:       c.Credentials.Type,
	}
	switch c.Credentials.Type {
	case CredentialsAccessToken:
		r.Token = c.Credentials.Token
	case CredentialsMQTTBasic:
		r.ClientID, r.Username, r.Password = c.Credentials.ClientID, c.Credentials.Username, c.Credentials.Password
	case CredentialsX509:
		pem, err := os.ReadFile(c.Credentials.CertFile)
		if err != nil {
			return nil, fmt.Errorf("credentials certificate: %w", err)
		}
		r.Hash = string(pem)
	}
	return r, nil
}

// provisionOnce runs one ThingsBoard provisioning exchange over MQTT:
// connect as "provision", subscribe to the response topic, publish the
// request, and wait for the answer on the same connection (the server
// answers only the session that asked).
func (a *Agent) provisionOnce(ctx context.Context) (*State, error) {
	if a.cfg.Dialect == DialectAzureDPS {
		return a.registerDPS(ctx)
	}
	req, err := a.request()
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	opts := a.clientOptions("zt-provision-" + randomHex(8))
	opts.SetUsername(provisionUser)
	if a.tls != nil {
		// Server authentication only: the device's own certificate is not
		// yet known to the server, and the TLS layer could refuse it.
		t := a.tls.Clone()
		t.Certificates = nil
		opts.SetTLSConfig(t)
	}
	c := mqtt.NewClient(opts)
	if err := wait(ctx, c.Connect(), a.opts.ConnectTimeout); err != nil {
		return nil, fmt.Errorf("provisioning connection to %s: %w", a.cfg.Server, err)
	}
	defer c.Disconnect(250)
	answer := make(chan []byte, 1)
	sub := c.Subscribe(provisionResponseTopic, 1, func(_ mqtt.Client, m mqtt.Message) {
		select {
		case answer <- m.Payload():
		default:
		}
	})
	if err := wait(ctx, sub, a.opts.ConnectTimeout); err != nil {
		return nil, fmt.Errorf("subscribe to %s: %w", provisionResponseTopic, err)
	}
	if err := wait(ctx, c.Publish(provisionRequestTopic, 1, false, body), a.opts.ConnectTimeout); err != nil {
		return nil, fmt.Errorf("publish the provisioning request: %w", err)
	}
	var raw []byte
	select {
	case raw = <-answer:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(a.opts.ProvisionTimeout):
		return nil, fmt.Errorf("no provisioning answer within %s", a.opts.ProvisionTimeout)
	}
	var resp provisionResponse
	if err := json.Unmarshal(raw, &resp); err != nil {
		return nil, fmt.Errorf("provisioning answer is not JSON: %.120q", raw)
	}
	if resp.Status != "SUCCESS" {
		return nil, &ProvisionError{Status: resp.Status, ErrorMsg: resp.ErrorMsg, Reason: resp.Reason}
	}
	return a.stateFrom(req, &resp)
}

// stateFrom turns a successful answer into the state to keep.
func (a *Agent) stateFrom(req *provisionRequest, resp *provisionResponse) (*State, error) {
	st := &State{
		Dialect:         a.cfg.Dialect,
		Server:          a.cfg.Server,
		DeviceName:      req.DeviceName,
		CredentialsType: resp.CredentialsType,
		ProvisionedAt:   time.Now().UTC(),
	}
	switch resp.CredentialsType {
	case CredentialsAccessToken:
		if err := json.Unmarshal(resp.CredentialsValue, &st.Token); err != nil || st.Token == "" {
			return nil, fmt.Errorf("provisioning answer: ACCESS_TOKEN without a token: %s", resp.CredentialsValue)
		}
	case CredentialsMQTTBasic:
		var v struct {
			ClientID string `json:"clientId"`
			UserName string `json:"userName"`
			Password string `json:"password"`
		}
		if err := json.Unmarshal(resp.CredentialsValue, &v); err != nil || (v.ClientID == "" && v.UserName == "") {
			return nil, fmt.Errorf("provisioning answer: MQTT_BASIC without a client id or user name")
		}
		st.ClientID, st.Username, st.Password = v.ClientID, v.UserName, v.Password
	case CredentialsX509:
		// The certificate and key stay in the files the configuration names.
	default:
		return nil, fmt.Errorf("provisioning answer: unknown credentials type %q", resp.CredentialsType)
	}
	return st, nil
}

// wait waits for an MQTT token, at most timeout or until ctx ends.
func wait(ctx context.Context, t mqtt.Token, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-t.Done():
		return t.Error()
	case <-timer.C:
		return fmt.Errorf("timed out after %s", timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
