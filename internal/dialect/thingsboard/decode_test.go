package thingsboard

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		wantErr string // empty: must decode
	}{
		{"minimal", `{"deviceName":"d","provisionDeviceKey":"k","provisionDeviceSecret":"s"}`, ""},
		{"token", `{"deviceName":"d","provisionDeviceKey":"k","provisionDeviceSecret":"s","credentialsType":"ACCESS_TOKEN","token":"abcdefgh"}`, ""},
		{"basic", `{"deviceName":"d","provisionDeviceKey":"k","provisionDeviceSecret":"s","credentialsType":"MQTT_BASIC","clientId":"c","username":"u","password":"p"}`, ""},
		{"whitespace around", " \n{\"deviceName\":\"d\"}\n ", ""},
		{"empty", ``, "not a valid provisioning JSON object"},
		{"not json", `hello`, "not a valid provisioning JSON object"},
		{"array", `[1,2]`, "not a valid provisioning JSON object"},
		{"truncated", `{"deviceName":"d"`, "not a valid provisioning JSON object"},
		{"unknown field", `{"deviceName":"d","colour":"red"}`, `unknown field "colour"`},
		{"wrong type", `{"deviceName":42}`, "not a valid provisioning JSON object"},
		{"trailing data", `{"deviceName":"d"}{"deviceName":"e"}`, "data after the JSON object"},
		{"invalid utf8", "{\"deviceName\":\"\xff\xfe\"}", "not valid UTF-8"},
		{"oversized", `{"deviceName":"` + strings.Repeat("a", MaxRequestSize) + `"}`, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.payload))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Decode error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// FuzzDecode: any payload either decodes into fields of valid UTF-8 or is
// refused with a message; never a panic.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"deviceName":"d","provisionDeviceKey":"k","provisionDeviceSecret":"s"}`))
	f.Add([]byte(`{"credentialsType":"X509_CERTIFICATE","hash":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"}`))
	f.Add([]byte(`{"deviceName":"\u0000"}`))
	f.Add([]byte(`{"a":`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		r, err := Decode(payload)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		for _, s := range []string{r.DeviceName, r.ProvisionDeviceKey, r.ProvisionDeviceSecret, r.Token, r.Hash} {
			if !utf8.ValidString(s) {
				t.Fatalf("decoded invalid UTF-8 %q", s)
			}
		}
	})
}
