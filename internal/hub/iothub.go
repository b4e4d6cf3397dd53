package hub

import (
	"context"
	"errors"
	"net/url"
	"strings"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/zerotouch/zerotouch/internal/attest"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// Device topic schemes. A device session speaks the scheme its CONNECT
// chose: an Azure IoT Hub user name ("<hub>/<deviceId>/?api-version=…")
// selects SchemeIoTHub, anything else SchemeThingsBoard. The scheme fixes
// which topics the session may use (see allowedIoTHub).
const (
	SchemeThingsBoard = "thingsboard"
	SchemeIoTHub      = "iothub"
)

// IoT Hub topics, per Azure's MQTT device protocol. "{id}" is the
// device's id on the hub (its zerotouch name).
const (
	IoTHubTwinPrefix    = "$iothub/twin/"
	IoTHubMethodsPrefix = "$iothub/methods/"
	iotHubDevicesPrefix = "devices/"
)

// IoTHubUsername is a parsed IoT Hub CONNECT user name.
type IoTHubUsername struct {
	Hub, DeviceID, APIVersion string
}

// ParseIoTHubUsername parses "<hub>/<deviceId>/?api-version=<v>[&…]" (the
// '?' is optional, as some SDKs leave it out). The hub is a host name,
// with a port when the hub listens elsewhere than 8883.
func ParseIoTHubUsername(u string) (IoTHubUsername, bool) {
	hub, rest, ok := strings.Cut(u, "/")
	if !ok || hub == "" || strings.ContainsAny(hub, " ?&") {
		return IoTHubUsername{}, false
	}
	id, params, ok := strings.Cut(rest, "/")
	if !ok || id == "" || id == "registrations" {
		return IoTHubUsername{}, false
	}
	q, err := url.ParseQuery(strings.TrimPrefix(params, "?"))
	if err != nil || q.Get("api-version") == "" {
		return IoTHubUsername{}, false
	}
	return IoTHubUsername{Hub: hub, DeviceID: id, APIVersion: q.Get("api-version")}, true
}

// findBySAS authenticates an IoT Hub CONNECT whose password is a shared
// access signature: the client id must be the device id of the user name,
// the device must hold an active SYMMETRIC_KEY credential for that id, and
// the token must be for "<hub>/devices/<deviceId>", signed with one of its
// keys, and not expired.
func (h *Hub) findBySAS(ctx context.Context, pk packets.Packet, u IoTHubUsername) (auth, error) {
	if pk.Connect.ClientIdentifier != u.DeviceID {
		return auth{refusal: resultUnknownCredentials, detail: "the client id is not the user name's device id"}, nil
	}
	cred, dev, err := h.store.FindActiveCredential(ctx, registry.CredentialSymmetricKey, registry.HubDeviceLookupKey(u.DeviceID))
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return auth{refusal: resultUnknownCredentials}, nil
	case err != nil:
		return auth{}, err
	case cred.SymmetricKey == nil:
		return auth{}, errors.New("store returned a SYMMETRIC_KEY credential without its key")
	}
	_, err = h.opts.SAS.VerifyDevice(string(pk.Connect.Password), attest.DeviceResource(u.Hub, u.DeviceID), cred.SymmetricKey.Keys()...)
	switch {
	case errors.Is(err, attest.ErrExpired):
		// The device knows its key: tell it (CONNACK 5 all the same).
		return auth{dev: dev, refusal: resultBadPassword, detail: "the shared access signature has expired"}, nil
	case errors.Is(err, attest.ErrBadKey):
		return auth{}, err
	case err != nil:
		return auth{dev: dev, refusal: resultBadPassword, detail: err.Error()}, nil
	}
	return auth{cred: cred, dev: dev}, nil
}

// isIoTHubCONNECT reports whether a device CONNECT asks for the IoT Hub
// scheme, and parses its user name.
func isIoTHubCONNECT(pk packets.Packet) (IoTHubUsername, bool) {
	if len(pk.Connect.Username) > maxCredentialField {
		return IoTHubUsername{}, false
	}
	return ParseIoTHubUsername(string(pk.Connect.Username))
}

// hasSAS reports whether the CONNECT's password is a shared access signature.
func hasSAS(pk packets.Packet) bool {
	return pk.Connect.PasswordFlag && strings.HasPrefix(string(pk.Connect.Password), "SharedAccessSignature ")
}

// allowedIoTHub is the ACL of an IoT Hub device session, id being its
// device id on the hub: publish telemetry, twin requests and method
// answers; subscribe to its cloud-to-device messages, twin answers and
// desired-property updates, and method calls.
func allowedIoTHub(id, topic string, write bool) bool {
	events := iotHubDevicesPrefix + id + "/messages/events/"
	if write {
		return strings.HasPrefix(topic, events) || topic == strings.TrimSuffix(events, "/") ||
			strings.HasPrefix(topic, IoTHubTwinPrefix+"GET/") ||
			strings.HasPrefix(topic, IoTHubTwinPrefix+"PATCH/properties/reported/") ||
			strings.HasPrefix(topic, IoTHubMethodsPrefix+"res/")
	}
	switch topic {
	case iotHubDevicesPrefix + id + "/messages/devicebound/#",
		IoTHubTwinPrefix + "res/#",
		IoTHubTwinPrefix + "PATCH/properties/desired/#",
		IoTHubMethodsPrefix + "POST/#":
		return true
	}
	return false
}
