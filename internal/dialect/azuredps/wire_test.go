package azuredps

import (
	"errors"
	"strings"
	"testing"
)

func TestParseUsername(t *testing.T) {
	tests := []struct {
		in         string
		want       Username
		err        error
		registrant bool // IsUsername
	}{
		{"0ne00000A0A/registrations/dev-1/api-version=2019-03-31&ClientVersion=azure-iot-provisioning-device%2F1.9.1",
			Username{"0ne00000A0A", "dev-1", "2019-03-31"}, nil, true},
		{"0ne00000A0A/registrations/dev-1/?api-version=2021-06-01", Username{"0ne00000A0A", "dev-1", "2021-06-01"}, nil, true},
		{"0ne00000A0A/registrations/dev-1/api-version=2015-01-01", Username{}, ErrAPIVersion, true},
		{"0ne00000A0A/registrations/dev-1/ClientVersion=x", Username{}, ErrAPIVersion, true},
		{"0ne00000A0A/registrations/dev-1/api-version=%zz", Username{}, ErrAPIVersion, true},
		{"provision", Username{}, ErrNotDPS, false},
		{"hub.example.com/dev-1/?api-version=2021-04-12", Username{}, ErrNotDPS, false},
		{"/registrations/dev-1/api-version=2019-03-31", Username{}, ErrNotDPS, false},
		{"0ne00000A0A/registrations//api-version=2019-03-31", Username{}, ErrNotDPS, false},
		{"0ne00000A0A/registrations/dev-1", Username{}, ErrNotDPS, false},
		{"a/b/registrations/dev-1/api-version=2019-03-31", Username{}, ErrNotDPS, false},
	}
	for _, tc := range tests {
		got, err := ParseUsername(tc.in)
		if !errors.Is(err, tc.err) || got != tc.want {
			t.Errorf("ParseUsername(%q) = %+v, %v; want %+v, %v", tc.in, got, err, tc.want, tc.err)
		}
		if IsUsername(tc.in) != tc.registrant {
			t.Errorf("IsUsername(%q) = %v, want %v", tc.in, !tc.registrant, tc.registrant)
		}
	}
}

func TestParseRequestTopic(t *testing.T) {
	tests := []struct {
		in   string
		want RequestTopic
		ok   bool
	}{
		{"$dps/registrations/PUT/iotdps-register/?$rid=5f0c", RequestTopic{KindRegister, "5f0c", ""}, true},
		{"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=4.abc.def", RequestTopic{KindOperationStatus, "2", "4.abc.def"}, true},
		{"$dps/registrations/PUT/iotdps-register/", RequestTopic{}, false},
		{"$dps/registrations/PUT/iotdps-register/?rid=1", RequestTopic{}, false},
		{"$dps/registrations/PUT/iotdps-register/?$rid=a/b", RequestTopic{}, false},
		{"$dps/registrations/PUT/iotdps-register/?$rid=" + strings.Repeat("x", 200), RequestTopic{}, false},
		{"$dps/registrations/DELETE/x/?$rid=1", RequestTopic{}, false},
		{"$dps/registrations/PUT/iotdps-register/?$rid=1;x", RequestTopic{}, false},
		{"$dps/registrations/PUT/iotdps-register/?$rid=%00", RequestTopic{}, false},
		{"$dps/registrations/PUT/iotdps-register/?$rid=a%20b", RequestTopic{}, false},
	}
	for _, tc := range tests {
		got, err := ParseRequestTopic(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("ParseRequestTopic(%q) = %+v, %v; want %+v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestResponseTopic(t *testing.T) {
	for _, tc := range []struct {
		status, retry int
		want          string
	}{
		{202, 1, "$dps/registrations/res/202/?$rid=r&retry-after=1"},
		{202, 0, "$dps/registrations/res/202/?$rid=r&retry-after=0"},
		{200, 0, "$dps/registrations/res/200/?$rid=r"},
		{429, 1, "$dps/registrations/res/429/?$rid=r&retry-after=1"},
	} {
		if got := ResponseTopic(tc.status, "r", tc.retry); got != tc.want {
			t.Errorf("ResponseTopic(%d, r, %d) = %q, want %q", tc.status, tc.retry, got, tc.want)
		}
	}
}

func TestIsPath(t *testing.T) {
	for path, want := range map[string]bool{
		"/0ne00000A0A/registrations/dev-1/register":         true,
		"/0ne00000A0A/registrations/dev-1/operations/4.a.b": true,
		"/api/v1/provision":                                 false,
		"/0ne00000A0A/registrations/dev-1":                  false,
		"/0ne00000A0A/registrations//register":              false,
		"/0ne00000A0A/registrations/dev-1/operations/":      false,
		"/0ne00000A0A/registrations/dev-1/register/extra":   false,
		"/0ne00000A0A/devices/dev-1/register":               false,
	} {
		if IsPath(path) != want {
			t.Errorf("IsPath(%q) = %v, want %v", path, !want, want)
		}
	}
}

func TestDecodeRegisterRequest(t *testing.T) {
	for _, tc := range []struct {
		in, id, payload string
		ok              bool
	}{
		{`{"registrationId":"dev-1","payload":{"a":1}}`, "dev-1", `{"a":1}`, true},
		{` `, "", "", true},
		{`{"registrationId":"dev-1","payload":null,"extra":true}`, "dev-1", "", true},
		{`{"registrationId":1}`, "", "", false},
		{`[]`, "", "", false},
		{`{"registrationId":"dev-1"`, "", "", false},
		{`{"registrationId":"` + strings.Repeat("x", MaxRequestSize) + `"}`, "", "", false},
	} {
		r, err := DecodeRegisterRequest([]byte(tc.in))
		if (err == nil) != tc.ok || (tc.ok && (r.RegistrationID != tc.id || string(r.Payload) != tc.payload)) {
			t.Errorf("DecodeRegisterRequest(%.40q) = %+v, %v", tc.in, r, err)
		}
	}
}

func FuzzParsers(f *testing.F) {
	f.Add("0ne00000A0A/registrations/dev-1/api-version=2019-03-31", "$dps/registrations/PUT/iotdps-register/?$rid=1", []byte(`{"registrationId":"dev-1"}`), "/0ne0/registrations/x/register")
	f.Add("a/registrations/b/?api-version=2021-06-01&x=%ff", "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=4.a", []byte(" "), "/x/registrations/y/operations/z")
	f.Add("a/registrations/b/api-version=2019-03-31", "$dps/registrations/PUT/iotdps-register/?$rid=%00%2B", []byte("{}"), "/")
	f.Fuzz(func(t *testing.T, user, topic string, body []byte, path string) {
		if u, err := ParseUsername(user); err == nil && (u.IDScope == "" || u.RegistrationID == "" || u.APIVersion == "") {
			t.Fatalf("ParseUsername(%q) = %+v with an empty part", user, u)
		}
		if rt, err := ParseRequestTopic(topic); err == nil {
			if rt.RID == "" || strings.ContainsAny(rt.RID, "&=/#+") {
				t.Fatalf("ParseRequestTopic(%q) accepted rid %q", topic, rt.RID)
			}
			// The answer's topic must be a valid topic name.
			if resp := ResponseTopic(200, rt.RID, 0); strings.ContainsAny(resp, "#+\x00") {
				t.Fatalf("answer topic %q has wildcards", resp)
			}
		}
		DecodeRegisterRequest(body)
		IsPath(path)
	})
}
