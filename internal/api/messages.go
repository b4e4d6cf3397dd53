package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/uuid"

	"github.com/zerotouch/zerotouch/internal/device"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// MessageRequest is the body of POST /api/devices/{id}/messages: a
// cloud-to-device message for an Azure IoT device.
type MessageRequest struct {
	// Payload is the message body: a JSON string is sent as its text, any
	// other JSON value as its JSON encoding.
	Payload json.RawMessage `json:"payload"`
	// Properties are the message's application properties.
	Properties map[string]string `json:"properties,omitempty"`
	// MessageID is the message id; generated when empty.
	MessageID string `json:"messageId,omitempty"`
}

// MessageSent is the answer (202) to a delivered message.
type MessageSent struct {
	MessageID string `json:"messageId"`
	Delivered bool   `json:"delivered"`
}

func (s *server) sendMessage(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	d, err := s.liveDevice(r, key)
	if err != nil {
		return err
	}
	var req MessageRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if len(bytes.TrimSpace(req.Payload)) == 0 {
		return badRequest(`payload is required: {"payload": "text"} or {"payload": {"any": "JSON"}}`)
	}
	body := []byte(req.Payload)
	var text string
	if json.Unmarshal(req.Payload, &text) == nil {
		body = []byte(text)
	}
	m := device.Message{ID: req.MessageID, DeviceName: d.Name, Payload: body, Properties: req.Properties}
	if m.ID == "" {
		m.ID = uuid.NewString()
	}
	err = s.devices.SendMessage(d.ID, m)
	ev := registry.AuditEvent{Action: "device.message", DeviceID: d.ID, ProfileID: d.ProfileID,
		Detail: fmt.Sprintf("cloud-to-device message %q (%d bytes) to device %s", m.ID, len(body), d.Name)}
	switch {
	case err == nil:
		ev.Detail += ": delivered"
		s.audit(r, key, ev)
		writeJSON(w, http.StatusAccepted, MessageSent{MessageID: m.ID, Delivered: true})
		return nil
	case errors.Is(err, device.ErrOffline):
		ev.Result, ev.Detail = auditRPCOffline, ev.Detail+": not sent, the device is offline"
		s.audit(r, key, ev)
		return &httpError{http.StatusConflict, CodeDeviceOffline, fmt.Sprintf(
			"device %s is not connected, or not subscribed to cloud-to-device messages (MQTT topic devices/%s/messages/devicebound/#): "+
				"nothing was sent (messages are not queued); retry once it is connected", d.Name, d.Name)}
	}
	return err
}
