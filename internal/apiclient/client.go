// Package apiclient is a typed client of zerotouch's management API
// (package api), used by the command line.
package apiclient

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/telemetry"
)

// Error is an error answer of the API.
type Error struct {
	Status  int
	Code    string
	Message string
	body    []byte // the raw answer, for routes whose errors say more
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (HTTP %d %s)", e.Message, e.Status, e.Code)
}

// ErrUnreachable wraps failures to connect to the server at all.
var ErrUnreachable = errors.New("server unreachable")

// Timeouts of a Client.
const (
	// RequestTimeout bounds an ordinary call, answer included.
	RequestTimeout = 30 * time.Second
	dialTimeout    = 5 * time.Second
)

// Client calls one zerotouch server with one API key. It is safe for
// concurrent use.
type Client struct {
	base   *url.URL
	apiKey string
	// http serves ordinary calls; upload has no overall timeout, since an
	// import of a large file legitimately takes long (its context bounds it).
	http, upload *http.Client
}

// New returns a client of the server at baseURL (e.g. http://127.0.0.1:8080).
func New(baseURL, apiKey string) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server URL %q: want http://host:port or https://host:port", baseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: dialTimeout}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		MaxIdleConnsPerHost:   4,
	}
	return &Client{
		base:   u,
		apiKey: apiKey,
		http:   &http.Client{Transport: t, Timeout: RequestTimeout},
		upload: &http.Client{Transport: t},
	}, nil
}

// BaseURL is the server URL the client calls.
func (c *Client) BaseURL() string { return c.base.String() }

// request describes one call.
type request struct {
	method, path string
	query        url.Values
	in           any       // encoded as JSON when set
	body         io.Reader // sent as is when set (with contentType and size)
	contentType  string
	size         int64
	// long lifts RequestTimeout: the call's context bounds it.
	long bool
	// public routes are called without the API key.
	public bool
	// accept is the Accept header; application/json when empty.
	accept string
}

// do sends the request and decodes a 2xx answer into out (when not nil);
// other answers become *Error.
func (c *Client) do(ctx context.Context, r request, out any) error {
	resp, err := c.send(ctx, r)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body) // lets the connection be reused
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decoding answer: %w", r.method, r.path, err)
	}
	return nil
}

// send sends the request and returns a 2xx answer, whose body the caller
// closes; other answers become *Error.
func (c *Client) send(ctx context.Context, r request) (*http.Response, error) {
	u := *c.base
	u.Path += r.path
	u.RawQuery = r.query.Encode()
	body, size, hc := r.body, r.size, c.upload
	if r.body == nil {
		if !r.long {
			hc = c.http
		}
		if r.in != nil {
			b, err := json.Marshal(r.in)
			if err != nil {
				return nil, fmt.Errorf("encoding request: %w", err)
			}
			body, size, r.contentType = bytes.NewReader(b), int64(len(b)), "application/json"
		}
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	if body != nil {
		req.ContentLength = size
		req.Header.Set("Content-Type", r.contentType)
	}
	// A public route gets no key: it needs none, and a key is sent only
	// where it is used.
	if !r.public {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	req.Header.Set("Accept", cmp.Or(r.accept, "application/json"))
	resp, err := hc.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return nil, fmt.Errorf("%w: %s: %w", ErrUnreachable, c.base, err)
		}
		return nil, fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		e := &Error{Status: resp.StatusCode, body: b}
		var eb api.Error
		if json.Unmarshal(b, &eb) == nil && eb.Code != "" {
			e.Code, e.Message = eb.Code, eb.Message
		} else {
			e.Message = strings.TrimSpace(http.StatusText(resp.StatusCode) + ": " + string(bytes.TrimSpace(b[:min(len(b), 200)])))
		}
		return nil, e
	}
	return resp, nil
}

func pathOf(format string, ids ...string) string {
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = url.PathEscape(id)
	}
	return fmt.Sprintf(format, args...)
}

func listQuery(limit int, after string) url.Values {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if after != "" {
		q.Set("after", after)
	}
	return q
}

// Profiles.

// CreateProfile creates a profile; the answer carries its provision secret.
func (c *Client) CreateProfile(ctx context.Context, in api.CreateProfileRequest) (*api.ProfileWithSecret, error) {
	var out api.ProfileWithSecret
	return &out, c.do(ctx, request{method: http.MethodPost, path: "/api/profiles", in: in}, &out)
}

// ListProfiles returns one page of profiles.
func (c *Client) ListProfiles(ctx context.Context, limit int, after string) (*api.List[registry.Profile], error) {
	var out api.List[registry.Profile]
	return &out, c.do(ctx, request{method: http.MethodGet, path: "/api/profiles", query: listQuery(limit, after)}, &out)
}

// GetProfile returns one profile.
func (c *Client) GetProfile(ctx context.Context, id string) (*registry.Profile, error) {
	var out registry.Profile
	return &out, c.do(ctx, request{method: http.MethodGet, path: pathOf("/api/profiles/%s", id)}, &out)
}

// UpdateProfile changes the fields set in in.
func (c *Client) UpdateProfile(ctx context.Context, id string, in api.UpdateProfileRequest) (*registry.Profile, error) {
	var out registry.Profile
	return &out, c.do(ctx, request{method: http.MethodPatch, path: pathOf("/api/profiles/%s", id), in: in}, &out)
}

// DeleteProfile deletes a profile no device uses.
func (c *Client) DeleteProfile(ctx context.Context, id string) error {
	return c.do(ctx, request{method: http.MethodDelete, path: pathOf("/api/profiles/%s", id)}, nil)
}

// RotateProfileSecret replaces a profile's provision secret and returns the new one.
func (c *Client) RotateProfileSecret(ctx context.Context, id string) (*api.ProfileWithSecret, error) {
	var out api.ProfileWithSecret
	return &out, c.do(ctx, request{method: http.MethodPost, path: pathOf("/api/profiles/%s/rotate-secret", id)}, &out)
}

// Devices.

// DeviceFilter selects devices in ListDevices; zero fields match everything.
type DeviceFilter struct {
	ProfileID, ProfileName string
	Status                 registry.DeviceStatus
	Provisioned            *bool
	NamePrefix             string
	Limit                  int
	After                  string
}

// ListDevices returns one page of devices.
func (c *Client) ListDevices(ctx context.Context, f DeviceFilter) (*api.List[registry.Device], error) {
	q := listQuery(f.Limit, f.After)
	for k, v := range map[string]string{"profileId": f.ProfileID, "profileName": f.ProfileName, "status": string(f.Status), "namePrefix": f.NamePrefix} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if f.Provisioned != nil {
		q.Set("provisioned", strconv.FormatBool(*f.Provisioned))
	}
	var out api.List[registry.Device]
	return &out, c.do(ctx, request{method: http.MethodGet, path: "/api/devices", query: q}, &out)
}

// CreateDevice creates a pre-provisioned device.
func (c *Client) CreateDevice(ctx context.Context, in api.CreateDeviceRequest) (*api.CreatedDevice, error) {
	var out api.CreatedDevice
	return &out, c.do(ctx, request{method: http.MethodPost, path: "/api/devices", in: in}, &out)
}

// GetDevice returns one device.
func (c *Client) GetDevice(ctx context.Context, id string) (*registry.Device, error) {
	var out registry.Device
	return &out, c.do(ctx, request{method: http.MethodGet, path: pathOf("/api/devices/%s", id)}, &out)
}

// DeleteDevice deletes a device and its credentials.
func (c *Client) DeleteDevice(ctx context.Context, id string) error {
	return c.do(ctx, request{method: http.MethodDelete, path: pathOf("/api/devices/%s", id)}, nil)
}

// SetDeviceEnabled enables or disables a device.
func (c *Client) SetDeviceEnabled(ctx context.Context, id string, enabled bool) (*registry.Device, error) {
	verb := "disable"
	if enabled {
		verb = "enable"
	}
	var out registry.Device
	return &out, c.do(ctx, request{method: http.MethodPost, path: pathOf("/api/devices/%s/", id) + verb}, &out)
}

// ListCredentials returns every credential of a device.
func (c *Client) ListCredentials(ctx context.Context, deviceID string) ([]registry.Credential, error) {
	var out api.List[registry.Credential]
	err := c.do(ctx, request{method: http.MethodGet, path: pathOf("/api/devices/%s/credentials", deviceID)}, &out)
	return out.Items, err
}

// RevokeCredential revokes one credential.
func (c *Client) RevokeCredential(ctx context.Context, id string) (*registry.Credential, error) {
	var out registry.Credential
	return &out, c.do(ctx, request{method: http.MethodPost, path: pathOf("/api/credentials/%s/revoke", id)}, &out)
}

// ImportOptions are the parameters of ImportDevices.
type ImportOptions struct {
	// ProfileID or ProfileName names the profile of every device.
	ProfileID, ProfileName string
	SkipInvalid            bool
}

// ImportDevices streams a CSV file of size bytes (-1 if unknown) to the
// server. When invalid rows refuse the import, it returns the result
// listing them together with the *Error.
func (c *Client) ImportDevices(ctx context.Context, csv io.Reader, size int64, o ImportOptions) (*api.ImportResult, error) {
	q := url.Values{}
	if o.ProfileID != "" {
		q.Set("profileId", o.ProfileID)
	}
	if o.ProfileName != "" {
		q.Set("profileName", o.ProfileName)
	}
	if o.SkipInvalid {
		q.Set("skipInvalid", "true")
	}
	var out api.ImportResult
	err := c.do(ctx, request{method: http.MethodPost, path: "/api/devices/import", query: q, body: csv, contentType: "text/csv", size: size}, &out)
	var e *Error
	if errors.As(err, &e) && e.Status == http.StatusUnprocessableEntity {
		_ = json.Unmarshal(e.body, &out) // a plain Error leaves out empty
	}
	return &out, err
}

// Audit.

// AuditFilter selects audit events; zero fields match everything.
type AuditFilter struct {
	DeviceID, Action, Result string
	Since                    time.Time
	// Before is the cursor: the Next of the previous page.
	Before string
	Limit  int
}

// ListAudit returns one page of audit events, newest first.
func (c *Client) ListAudit(ctx context.Context, f AuditFilter) (*api.List[registry.AuditEvent], error) {
	q := listQuery(f.Limit, "")
	for k, v := range map[string]string{"deviceId": f.DeviceID, "action": f.Action, "result": f.Result, "before": f.Before} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.UTC().Format(time.RFC3339))
	}
	var out api.List[registry.AuditEvent]
	return &out, c.do(ctx, request{method: http.MethodGet, path: "/api/audit", query: q}, &out)
}

// API keys.

// ListAPIKeys returns every API key (not the keys themselves).
func (c *Client) ListAPIKeys(ctx context.Context) ([]registry.APIKey, error) {
	var out api.List[registry.APIKey]
	err := c.do(ctx, request{method: http.MethodGet, path: "/api/apikeys"}, &out)
	return out.Items, err
}

// CreateAPIKey creates an API key; the answer carries the key, shown once.
func (c *Client) CreateAPIKey(ctx context.Context, in api.CreateAPIKeyRequest) (*api.CreatedAPIKey, error) {
	var out api.CreatedAPIKey
	return &out, c.do(ctx, request{method: http.MethodPost, path: "/api/apikeys", in: in}, &out)
}

// DeleteAPIKey deletes an API key.
func (c *Client) DeleteAPIKey(ctx context.Context, id string) error {
	return c.do(ctx, request{method: http.MethodDelete, path: pathOf("/api/apikeys/%s", id)}, nil)
}

// Connected devices: state, telemetry, attributes, RPC.

// DeviceState returns a device's connection state.
func (c *Client) DeviceState(ctx context.Context, deviceID string) (*api.DeviceState, error) {
	var out api.DeviceState
	return &out, c.do(ctx, request{method: http.MethodGet, path: pathOf("/api/devices/%s/state", deviceID)}, &out)
}

// keysQuery is the "keys" parameter, when there are keys.
func keysQuery(q url.Values, keys []string) url.Values {
	if len(keys) > 0 {
		q.Set("keys", strings.Join(keys, ","))
	}
	return q
}

// LatestTelemetry returns the latest value of the given keys of a device
// (of all its keys when keys is empty), sorted by key.
func (c *Client) LatestTelemetry(ctx context.Context, deviceID string, keys []string) ([]api.LatestValue, error) {
	var out api.LatestValues
	err := c.do(ctx, request{method: http.MethodGet, path: pathOf("/api/devices/%s/telemetry/latest", deviceID), query: keysQuery(url.Values{}, keys)}, &out)
	return out.Values, err
}

// TelemetryQuery selects a device's values in QueryTelemetry. Zero fields
// take the server's defaults: every key with a latest value, the 24 hours
// before To, To now, 100 values per key, newest first, raw values.
type TelemetryQuery struct {
	Keys []string
	// From (inclusive) and To (exclusive) bound the range; Since sets From
	// to that long before the server's now, instead of From.
	From, To time.Time
	Since    time.Duration
	// Limit and Order ("asc" or "desc") apply to raw values.
	Limit int
	Order string
	// Aggregation (min, max, avg, sum, count) with Interval aggregates the
	// values per interval.
	Aggregation string
	Interval    time.Duration
}

// QueryTelemetry returns a device's time series, one per key.
func (c *Client) QueryTelemetry(ctx context.Context, deviceID string, tq TelemetryQuery) ([]api.Series, error) {
	q := keysQuery(url.Values{}, tq.Keys)
	if !tq.From.IsZero() {
		q.Set("from", strconv.FormatInt(tq.From.UnixMilli(), 10))
	}
	if !tq.To.IsZero() {
		q.Set("to", strconv.FormatInt(tq.To.UnixMilli(), 10))
	}
	if tq.Since != 0 {
		q.Set("since", tq.Since.String())
	}
	if tq.Limit != 0 {
		q.Set("limit", strconv.Itoa(tq.Limit))
	}
	if tq.Order != "" {
		q.Set("order", tq.Order)
	}
	if tq.Aggregation != "" {
		q.Set("agg", tq.Aggregation)
	}
	if tq.Interval != 0 {
		q.Set("interval", tq.Interval.String())
	}
	var out api.TelemetrySeries
	err := c.do(ctx, request{method: http.MethodGet, path: pathOf("/api/devices/%s/telemetry", deviceID), query: q}, &out)
	return out.Series, err
}

// Attributes returns a device's attributes of scope (of all three scopes
// when scope is empty), only those of keys when keys is not empty.
func (c *Client) Attributes(ctx context.Context, deviceID string, scope telemetry.Scope, keys []string) ([]api.AttributeValue, error) {
	q := keysQuery(url.Values{}, keys)
	if scope != "" {
		q.Set("scope", string(scope))
	}
	var out api.Attributes
	err := c.do(ctx, request{method: http.MethodGet, path: pathOf("/api/devices/%s/attributes", deviceID), query: q}, &out)
	return out.Attributes, err
}

// SetAttributes sets shared or server attributes of a device, each value
// the JSON text of the value (typed by its form, as the API documents; the
// text is sent as is, so that 1.0 stays a double). It returns how many
// live sessions the shared attributes were pushed to.
func (c *Client) SetAttributes(ctx context.Context, deviceID string, scope telemetry.Scope, values map[string]json.RawMessage) (int, error) {
	var out api.AttributesSet
	err := c.do(ctx, request{method: http.MethodPut, path: pathOf("/api/devices/%s/attributes/%s", deviceID, string(scope)), in: values}, &out)
	return out.Pushed, err
}

// DeleteAttributes deletes shared or server attributes of a device and
// returns the keys that existed.
func (c *Client) DeleteAttributes(ctx context.Context, deviceID string, scope telemetry.Scope, keys []string) ([]string, error) {
	var out api.AttributesDeleted
	err := c.do(ctx, request{method: http.MethodDelete, path: pathOf("/api/devices/%s/attributes/%s", deviceID, string(scope)), query: keysQuery(url.Values{}, keys)}, &out)
	return out.Deleted, err
}

// RPCOptions tune RPC.
type RPCOptions struct {
	// Timeout is how long the server waits for the device's answer
	// (the server's default, 10s, when 0).
	Timeout time.Duration
	// OneWay returns once the device took the request, without an answer.
	OneWay bool
}

// rpcDefaultTimeout mirrors the server's default, to bound the client's wait.
const rpcDefaultTimeout = 10 * time.Second

// RPC sends a command to a device and returns its answer (nil for a
// one-way request). An offline device is an *Error with Code
// api.CodeDeviceOffline (409), no answer in time one with
// api.CodeRPCTimeout (504).
func (c *Client) RPC(ctx context.Context, deviceID, method string, params json.RawMessage, o RPCOptions) (json.RawMessage, error) {
	in := api.RPCRequest{Method: method, Params: params, OneWay: o.OneWay}
	wait := rpcDefaultTimeout
	if o.Timeout != 0 {
		in.Timeout, wait = o.Timeout.String(), o.Timeout
	}
	// The answer may legitimately take longer than RequestTimeout: bound
	// the call by the RPC's own timeout, plus the ordinary margin.
	ctx, cancel := context.WithTimeout(ctx, wait+RequestTimeout)
	defer cancel()
	var out struct {
		api.RPCResult
		api.RPCDelivered
	}
	err := c.do(ctx, request{method: http.MethodPost, path: pathOf("/api/devices/%s/rpc", deviceID), in: in, long: true}, &out)
	if err != nil || o.OneWay {
		return nil, err
	}
	// The server indents its answers; give back the value compact, as the
	// device sent it.
	var buf bytes.Buffer
	if json.Compact(&buf, out.Result) != nil {
		return out.Result, nil
	}
	return buf.Bytes(), nil
}
