package server

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/zerotouch/zerotouch/internal/attest"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// The IoT Hub device protocol after a DPS registration, with a client
// written from Azure's MQTT documentation: SAS authentication,
// device-to-cloud messages, the twin (GET, reported PATCH, desired
// updates) and direct methods called from the management API.

// iotHubConnect connects as an Azure device: client id = device id,
// user name "<hub>/<deviceId>/?api-version=…", password a device SAS token.
func (n *node) iotHubConnect(t *testing.T, hubName, deviceID, clientID, key string) (mqtt.Client, error) {
	t.Helper()
	tok, err := attest.Sign(attest.URLEncode(attest.DeviceResource(hubName, deviceID)), "", key, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	o := mqtt.NewClientOptions().AddBroker("ssl://" + n.srv.MQTTSAddr().String()).SetTLSConfig(n.tlsConfig(t)).
		SetClientID(clientID).SetUsername(hubName + "/" + deviceID + "/?api-version=2021-04-12&DeviceClientType=zerotouch-test").
		SetPassword(tok).SetCleanSession(false).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetProtocolVersion(4)
	c := mqtt.NewClient(o)
	if tk := c.Connect(); !tk.WaitTimeout(5*time.Second) || tk.Error() != nil {
		return nil, fmt.Errorf("connect: %v", tk.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

func TestIoTHubDeviceProtocol(t *testing.T) {
	n := startNode(t, "")
	ctx := t.Context()
	scope := n.idScope(t)
	st := n.srv.Store()
	if err := st.CreateEnrollment(ctx, enrollment("meter-7", registry.EnrollmentEnabled, registry.EnrollmentReprovisionMigrate)); err != nil {
		t.Fatal(err)
	}
	a := n.registerMQTT(t, scope, "meter-7", dpsKey1)
	hubName, deviceID := a.str("registrationState", "assignedHub"), a.str("registrationState", "deviceId")
	dev, err := st.GetDeviceByName(ctx, registry.DefaultOrgID, deviceID)
	if err != nil {
		t.Fatal(err)
	}

	// Refused: a wrong key, a token for another device, a client id that
	// is not the device id.
	if _, err := n.iotHubConnect(t, hubName, deviceID, deviceID, "d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXk="); err == nil {
		t.Fatal("connected with a key that is not the device's")
	}
	if _, err := n.iotHubConnect(t, hubName, deviceID, "other-client", dpsKey1); err == nil {
		t.Fatal("connected with a client id other than the device id")
	}
	// A token in the clear is refused: whoever sees it could replay it.
	tok, _ := attest.Sign(attest.URLEncode(attest.DeviceResource(hubName, deviceID)), "", dpsKey1, time.Now().Add(time.Hour))
	if _, err := n.connectDevice(deviceID, hubName+"/"+deviceID+"/?api-version=2021-04-12", tok); err == nil {
		t.Fatal("a SAS token was accepted over plain MQTT")
	}

	c, err := n.iotHubConnect(t, hubName, deviceID, deviceID, dpsKey2) // secondary key
	if err != nil {
		t.Fatal(err)
	}
	msgs := make(chan mqtt.Message, 20)
	for _, f := range []string{"$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#", "$iothub/methods/POST/#", "devices/" + deviceID + "/messages/devicebound/#"} {
		tk := c.Subscribe(f, 0, func(_ mqtt.Client, m mqtt.Message) { msgs <- m })
		if !tk.WaitTimeout(5*time.Second) || tk.Error() != nil || tk.(*mqtt.SubscribeToken).Result()[f] >= 0x80 {
			t.Fatalf("subscribe %s: %v %v", f, tk.Error(), tk.(*mqtt.SubscribeToken).Result())
		}
	}
	// Another device's topics are refused.
	tk := c.Subscribe("devices/other/messages/devicebound/#", 0, nil)
	tk.WaitTimeout(5 * time.Second)
	if tk.(*mqtt.SubscribeToken).Result()["devices/other/messages/devicebound/#"] < 0x80 {
		t.Fatal("subscribing to another device's messages was granted")
	}
	nextMsg := func(prefix string) mqtt.Message {
		t.Helper()
		for {
			select {
			case m := <-msgs:
				if strings.HasPrefix(m.Topic(), prefix) {
					return m
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("nothing on %s", prefix)
			}
		}
	}

	// Device-to-cloud messages, properties in the topic, QoS 1 acknowledged.
	topic := "devices/" + deviceID + "/messages/events/" + url.PathEscape("$.ct=application/json&$.ce=utf-8&line=3")
	if tk := c.Publish(topic, 1, false, `{"power":12.5,"state":"run"}`); !tk.WaitTimeout(5*time.Second) || tk.Error() != nil {
		t.Fatalf("telemetry: %v", tk.Error())
	}
	if tk := c.Publish("devices/"+deviceID+"/messages/events/", 1, false, "plain text"); !tk.WaitTimeout(5*time.Second) || tk.Error() != nil {
		t.Fatalf("telemetry: %v", tk.Error())
	}
	latest := n.latest(dev.ID)
	if compact(latest["power"].Value) != "12.5" || compact(latest["state"].Value) != `"run"` || compact(latest["message"].Value) != `"plain text"` {
		t.Fatalf("stored telemetry = %+v", latest)
	}

	// Twin GET: the desired properties of the enrollment's initial twin.
	c.Publish("$iothub/twin/GET/?$rid=1", 0, false, " ")
	m := nextMsg("$iothub/twin/res/")
	var twin struct {
		Desired  map[string]json.RawMessage `json:"desired"`
		Reported map[string]json.RawMessage `json:"reported"`
	}
	if m.Topic() != "$iothub/twin/res/200/?$rid=1" || json.Unmarshal(m.Payload(), &twin) != nil ||
		string(twin.Desired["interval"]) != "5" || twin.Desired["$version"] == nil || twin.Reported["$version"] == nil {
		t.Fatalf("twin answer %q on %q", m.Payload(), m.Topic())
	}
	if _, leaked := twin.Desired["chassis"]; leaked {
		t.Fatal("tags (server attributes) reached the device")
	}

	// Reported properties become client attributes.
	c.Publish("$iothub/twin/PATCH/properties/reported/?$rid=2", 0, false, `{"firmware":"1.2.3","battery":87}`)
	if m := nextMsg("$iothub/twin/res/"); !strings.HasPrefix(m.Topic(), "$iothub/twin/res/204/?$rid=2&$version=") {
		t.Fatalf("reported PATCH answered on %q", m.Topic())
	}
	if got := n.attributes(t, dev.ID, "client"); got["firmware"] != `"1.2.3"` || got["battery"] != "87" {
		t.Fatalf("client attributes = %v", got)
	}
	// A bad patch is answered (the SDKs wait for every twin answer).
	c.Publish("$iothub/twin/PATCH/properties/reported/?$rid=3", 0, false, `[1,2,3]`)
	if m := nextMsg("$iothub/twin/res/"); m.Topic() != "$iothub/twin/res/400/?$rid=3" || !strings.Contains(string(m.Payload()), `"errorCode":400004`) {
		t.Fatalf("bad reported patch answered %q on %q", m.Payload(), m.Topic())
	}

	// A desired property set by the operator is pushed.
	if code := n.api("PUT", "/api/devices/"+dev.ID+"/attributes/shared", map[string]any{"interval": 30}, nil); code != 200 {
		t.Fatalf("set desired: %d", code)
	}
	m = nextMsg("$iothub/twin/PATCH/properties/desired/")
	var patch map[string]json.RawMessage
	if json.Unmarshal(m.Payload(), &patch) != nil || string(patch["interval"]) != "30" || patch["$version"] == nil ||
		!strings.HasPrefix(m.Topic(), "$iothub/twin/PATCH/properties/desired/?$version=") {
		t.Fatalf("desired patch %q on %q", m.Payload(), m.Topic())
	}

	// A cloud-to-device message with properties.
	var sent struct {
		MessageID string `json:"messageId"`
	}
	if code := n.api("POST", "/api/devices/"+dev.ID+"/messages", map[string]any{"payload": "stop line 3", "properties": map[string]string{"priority": "high", "a&b": "c=d"}}, &sent); code != 202 || sent.MessageID == "" {
		t.Fatalf("send message: %d %+v", code, sent)
	}
	m = nextMsg("devices/" + deviceID + "/messages/devicebound/")
	props, err := url.ParseQuery(strings.TrimPrefix(m.Topic(), "devices/"+deviceID+"/messages/devicebound/"))
	if err != nil || string(m.Payload()) != "stop line 3" || props.Get("$.mid") != sent.MessageID || props.Get("priority") != "high" ||
		props.Get("a&b") != "c=d" || props.Get("$.to") != "/devices/"+deviceID+"/messages/devicebound" {
		t.Fatalf("message %q on %q (%v)", m.Payload(), m.Topic(), err)
	}

	// A direct method, called through the management API.
	go func() {
		m := nextMsg("$iothub/methods/POST/")
		rid := m.Topic()[strings.Index(m.Topic(), "$rid=")+5:]
		c.Publish("$iothub/methods/res/200/?$rid="+rid, 0, false, fmt.Sprintf(`{"rebooting":true,"asked":%s}`, m.Payload()))
	}()
	var res struct {
		Result json.RawMessage `json:"result"`
	}
	if code := n.api("POST", "/api/devices/"+dev.ID+"/rpc", map[string]any{"method": "reboot", "params": map[string]any{"delay": 5}}, &res); code != 200 {
		t.Fatalf("direct method: HTTP %d %s", code, res.Result)
	}
	if got := compact(res.Result); got != `{"status":200,"payload":{"rebooting":true,"asked":{"delay":5}}}` {
		t.Fatalf("direct method result = %s", got)
	}

	// Offline: nothing is sent, nothing queued.
	c.Disconnect(0)
	deadline := time.Now().Add(5 * time.Second)
	for {
		code := n.api("POST", "/api/devices/"+dev.ID+"/messages", map[string]any{"payload": map[string]any{"x": 1}}, nil)
		if code == 409 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("message to a disconnected device: HTTP %d, want 409", code)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
