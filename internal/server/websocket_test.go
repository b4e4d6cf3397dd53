package server

import (
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/zerotouch/zerotouch/internal/attest"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// MQTT over WebSocket on the HTTP(S) listeners: DPS and IoT Hub on the
// Azure SDKs' path /$iothub/websocket over TLS, any device on /mqtt.
func TestMQTTOverWebSocket(t *testing.T) {
	n := startNode(t, "")
	ctx := t.Context()
	scope := n.idScope(t)
	if err := n.srv.Store().CreateEnrollment(ctx, enrollment("ws-1", registry.EnrollmentEnabled, registry.EnrollmentReprovisionMigrate)); err != nil {
		t.Fatal(err)
	}
	wss := "wss://" + n.srv.HTTPSAddr().String() + iotHubWebSocketPath

	// DPS over WebSocket over TLS.
	s := dpsSessionOn(t, wss, n.tlsConfig(t), dpsUsername(scope, "ws-1"), dpsToken(t, scope, "ws-1", dpsKey1, time.Hour), "ws-1")
	a := s.register("ws-1", "")
	done := s.poll(a.str("operationId"))
	if done.str("status") != "assigned" {
		t.Fatalf("registration over wss = %s", done.Raw)
	}
	s.c.Disconnect(0)

	// IoT Hub over WebSocket over TLS, with the device's SAS token.
	hubName := done.str("registrationState", "assignedHub")
	tok, err := attest.Sign(attest.URLEncode(attest.DeviceResource(hubName, "ws-1")), "", dpsKey1, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	o := mqtt.NewClientOptions().AddBroker(wss).SetTLSConfig(n.tlsConfig(t)).SetClientID("ws-1").
		SetUsername(hubName + "/ws-1/?api-version=2021-04-12").SetPassword(tok).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetProtocolVersion(4)
	hubc := mqtt.NewClient(o)
	if tk := hubc.Connect(); !tk.WaitTimeout(5*time.Second) || tk.Error() != nil {
		t.Fatalf("IoT Hub over wss: %v", tk.Error())
	}
	defer hubc.Disconnect(0)
	if tk := hubc.Publish("devices/ws-1/messages/events/", 1, false, `{"rpm":1450}`); !tk.WaitTimeout(5*time.Second) || tk.Error() != nil {
		t.Fatalf("telemetry over wss: %v", tk.Error())
	}
	dev, err := n.srv.Store().GetDeviceByName(ctx, registry.DefaultOrgID, "ws-1")
	if err != nil {
		t.Fatal(err)
	}
	if got := compact(n.latest(dev.ID)["rpm"].Value); got != "1450" {
		t.Fatalf("stored over wss: rpm = %s", got)
	}

	// A ThingsBoard device over plain WebSocket on the HTTP listener.
	p := n.createProfile("ws", "allow-create", "ACCESS_TOKEN", "never")
	id, token := n.provisionedDevice(p, "tb-ws")
	o = mqtt.NewClientOptions().AddBroker("ws://" + n.srv.HTTPAddr().String() + mqttWebSocketPath).SetClientID("tb-ws").
		SetUsername(token).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	tb := mqtt.NewClient(o)
	if tk := tb.Connect(); !tk.WaitTimeout(5*time.Second) || tk.Error() != nil {
		t.Fatalf("ThingsBoard device over ws: %v", tk.Error())
	}
	defer tb.Disconnect(0)
	publish(t, tb, "v1/devices/me/telemetry", 1, `{"door":"open"}`)
	if got := compact(n.latest(id)["door"].Value); got != `"open"` {
		t.Fatalf("stored over ws: door = %s", got)
	}

	// DPS tokens do not travel in the clear: refused on plain /mqtt.
	ps := dpsSessionOn(t, "ws://"+n.srv.HTTPAddr().String()+mqttWebSocketPath, nil, dpsUsername(scope, "ws-1"), dpsToken(t, scope, "ws-1", dpsKey1, time.Hour), "ws-1")
	if a := ps.register("ws-1", ""); a.Status != 401 {
		t.Fatalf("DPS over plain ws = %d %s, want 401", a.Status, a.Raw)
	}
}
