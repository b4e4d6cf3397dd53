package hub

import "testing"

func TestParseIoTHubUsername(t *testing.T) {
	tests := []struct {
		in   string
		want IoTHubUsername
		ok   bool
	}{
		{"hub.example.com/dev-1/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4", IoTHubUsername{"hub.example.com", "dev-1", "2021-04-12"}, true},
		{"localhost:45123/dev-1/api-version=2020-09-30", IoTHubUsername{"localhost:45123", "dev-1", "2020-09-30"}, true},
		{"hub.example.com/dev-1/?DeviceClientType=x", IoTHubUsername{}, false},
		{"hub.example.com/dev-1", IoTHubUsername{}, false},
		{"/dev-1/?api-version=2021-04-12", IoTHubUsername{}, false},
		{"hub.example.com//?api-version=2021-04-12", IoTHubUsername{}, false},
		{"0ne00000A0A/registrations/dev-1/api-version=2019-03-31", IoTHubUsername{}, false},
		{"provision", IoTHubUsername{}, false},
		{"some-access-token", IoTHubUsername{}, false},
		{"hub.example.com/dev-1/?api-version=%zz", IoTHubUsername{}, false},
	}
	for _, tc := range tests {
		got, ok := ParseIoTHubUsername(tc.in)
		if ok != tc.ok || got != tc.want {
			t.Errorf("ParseIoTHubUsername(%q) = %+v, %v; want %+v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestAllowedIoTHub(t *testing.T) {
	tests := []struct {
		topic string
		write bool
		want  bool
	}{
		{"devices/dev-1/messages/events/", true, true},
		{"devices/dev-1/messages/events/%24.ct=application%2Fjson", true, true},
		{"devices/dev-1/messages/events", true, true},
		{"devices/dev-2/messages/events/", true, false},
		{"devices/dev-1/messages/devicebound/x", true, false},
		{"$iothub/twin/GET/?$rid=1", true, true},
		{"$iothub/twin/PATCH/properties/reported/?$rid=1", true, true},
		{"$iothub/twin/PATCH/properties/desired/?$version=1", true, false},
		{"$iothub/methods/res/200/?$rid=1", true, true},
		{"$iothub/methods/POST/reboot/?$rid=1", true, false},
		{"v1/devices/me/telemetry", true, false},
		{"devices/dev-1/messages/devicebound/#", false, true},
		{"devices/dev-2/messages/devicebound/#", false, false},
		{"devices/+/messages/devicebound/#", false, false},
		{"$iothub/twin/res/#", false, true},
		{"$iothub/twin/PATCH/properties/desired/#", false, true},
		{"$iothub/methods/POST/#", false, true},
		{"$iothub/#", false, false},
		{"#", false, false},
		{"v1/devices/me/attributes", false, false},
	}
	for _, tc := range tests {
		if got := allowedIoTHub("dev-1", tc.topic, tc.write); got != tc.want {
			t.Errorf("allowedIoTHub(dev-1, %q, write %v) = %v, want %v", tc.topic, tc.write, got, tc.want)
		}
	}
}

func FuzzParseIoTHubUsername(f *testing.F) {
	f.Add("hub.example.com/dev-1/?api-version=2021-04-12")
	f.Add("a/b/c")
	f.Fuzz(func(t *testing.T, u string) {
		if got, ok := ParseIoTHubUsername(u); ok && (got.Hub == "" || got.DeviceID == "" || got.APIVersion == "") {
			t.Fatalf("ParseIoTHubUsername(%q) = %+v with an empty part", u, got)
		}
	})
}
