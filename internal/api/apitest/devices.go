package apitest

import (
	"encoding/json"
	"sync"

	"github.com/zerotouch/zerotouch/internal/device"
	"github.com/zerotouch/zerotouch/internal/telemetry"
)

// Transport plays connected devices for tests of the API's clients, at the
// device.Transport boundary (the real MQTT path is tested with the hub): a
// device that is connected here takes attribute pushes and RPC requests,
// and answers the methods it was given an answer for.
type Transport struct {
	svc *device.Service

	mu      sync.Mutex
	online  map[string]bool
	answers map[string]json.RawMessage // method → answer
	calls   []device.RPCRequest
}

// NewTransport registers a Transport on the server's device service.
func (s *Server) NewTransport() *Transport {
	d := &Transport{svc: s.Devices, online: map[string]bool{}, answers: map[string]json.RawMessage{}}
	s.Devices.AddTransport(d)
	return d
}

// Connect opens a session of the device (as far as the service knows).
func (d *Transport) Connect(deviceID string) {
	d.mu.Lock()
	d.online[deviceID] = true
	d.mu.Unlock()
	d.svc.Connected(deviceID)
}

// Answer makes connected devices answer RPC requests for method with
// result; requests for other methods are taken and never answered.
func (d *Transport) Answer(method string, result json.RawMessage) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.answers[method] = result
}

// Calls returns the RPC requests connected devices took.
func (d *Transport) Calls() []device.RPCRequest {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]device.RPCRequest(nil), d.calls...)
}

// PushAttributes implements device.Transport.
func (d *Transport) PushAttributes(deviceID string, _ []telemetry.Attribute, _ []string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.online[deviceID] {
		return 1
	}
	return 0
}

// SendRPC implements device.Transport; the answer comes from another
// goroutine, as a device's would.
func (d *Transport) SendRPC(deviceID string, req device.RPCRequest) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.online[deviceID] {
		return 0
	}
	d.calls = append(d.calls, req)
	if res, ok := d.answers[req.Method]; ok {
		go d.svc.RPCResponse(deviceID, req.ID, res)
	}
	return 1
}
