package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/zerotouch/zerotouch/internal/device"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// RPCRequest is the body of POST /api/devices/{id}/rpc: a command for the
// device, as ThingsBoard's server-side RPC has it.
type RPCRequest struct {
	Method string `json:"method"`
	// Params is any JSON value; absent or null for none.
	Params json.RawMessage `json:"params,omitempty"`
	// Timeout is how long to wait for the answer, a duration such as
	// "10s" (device.DefaultRPCTimeout when empty, at most
	// device.MaxRPCTimeout).
	Timeout string `json:"timeout,omitempty"`
	// OneWay sends the request without waiting for an answer.
	OneWay bool `json:"oneway,omitempty"`
}

// RPCResult is the answer (200) to a two-way RPC request.
type RPCResult struct {
	// Result is the JSON value the device answered.
	Result json.RawMessage `json:"result"`
}

// RPCDelivered is the answer (202) to a one-way RPC request.
type RPCDelivered struct {
	// Delivered is true: a live session of the device took the request.
	Delivered bool `json:"delivered"`
}

// maxMethodLen bounds an RPC method name.
const maxMethodLen = 255

// Audit results of device.rpc besides success.
const (
	auditRPCOffline   = "device-offline"
	auditRPCTimeout   = "rpc-timeout"
	auditRPCAbandoned = "abandoned" // the caller hung up before the answer
)

func (s *server) callDevice(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	d, err := s.liveDevice(r, key)
	if err != nil {
		return err
	}
	var req RPCRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	switch {
	case req.Method == "":
		return badRequest(`method is required: the command's name, such as {"method": "setGpio", "params": {"pin": 4, "value": 1}}`)
	case len(req.Method) > maxMethodLen:
		return badRequest("method is longer than %d bytes", maxMethodLen)
	}
	if string(req.Params) == "null" {
		req.Params = nil
	}
	timeout := device.DefaultRPCTimeout
	if req.Timeout != "" {
		t, err := time.ParseDuration(req.Timeout)
		if err != nil || t <= 0 || t > device.MaxRPCTimeout {
			return badRequest("timeout %q: want a duration from 1ms to %s, such as 10s or 2m", req.Timeout, device.MaxRPCTimeout)
		}
		timeout = t
	}
	// The request's context bounds the wait: once the body is read,
	// net/http watches the connection (with no read deadline) and ends the
	// context when the caller hangs up, which abandons the call.
	ctx := r.Context()
	res, err := s.devices.Call(ctx, d.ID, req.Method, req.Params, device.CallOptions{Timeout: timeout, OneWay: req.OneWay})
	what := "RPC " + strconv.Quote(req.Method) + " to device " + d.Name
	if req.OneWay {
		what = "one-way " + what
	}
	ev := registry.AuditEvent{Action: "device.rpc", DeviceID: d.ID, ProfileID: d.ProfileID}
	switch {
	case err == nil && req.OneWay:
		ev.Detail = what + ": delivered"
		s.audit(r, key, ev)
		writeJSON(w, http.StatusAccepted, RPCDelivered{Delivered: true})
		return nil
	case err == nil:
		if len(res) == 0 {
			res = json.RawMessage("null")
		} else if !json.Valid(res) {
			// A dialect hands over valid JSON; should one not, keep the
			// answer readable rather than break the response.
			b, _ := json.Marshal(string(res))
			res = b
		}
		ev.Detail = what + ": answered"
		s.audit(r, key, ev)
		writeJSON(w, http.StatusOK, RPCResult{Result: res})
		return nil
	case errors.Is(err, device.ErrOffline):
		ev.Result, ev.Detail = auditRPCOffline, what+": not sent, the device is offline"
		s.audit(r, key, ev)
		return &httpError{http.StatusConflict, CodeDeviceOffline, fmt.Sprintf(
			"device %s is not connected, or not subscribed to RPC requests (MQTT topic v1/devices/me/rpc/request/+): nothing was sent; "+
				"check its state (GET /api/devices/%s/state, zerotouch device state %s) and retry once it is connected",
			d.Name, d.ID, d.ID)}
	case errors.Is(err, device.ErrTimeout):
		ev.Result, ev.Detail = auditRPCTimeout, what+": no answer within "+timeout.String()
		s.audit(r, key, ev)
		return &httpError{http.StatusGatewayTimeout, CodeRPCTimeout, fmt.Sprintf(
			"device %s took the request but did not answer %q within %s (it may still carry it out); "+
				"retry with a longer timeout, or check that the device answers this method",
			d.Name, req.Method, timeout)}
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		// The caller hung up: the call is abandoned and there is no one to
		// answer. The request may have reached the device: record it.
		ev.Result, ev.Detail = auditRPCAbandoned, what+": the caller left before the answer"
		s.audit(r, key, ev)
		return nil
	}
	return err
}
