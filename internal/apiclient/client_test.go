package apiclient_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/api/apitest"
	"github.com/zerotouch/zerotouch/internal/apiclient"
	"github.com/zerotouch/zerotouch/internal/registry"
)

func TestClient(t *testing.T) {
	srv := apitest.New(t)
	ctx := context.Background()
	c, err := apiclient.New(srv.URL+"/", srv.Keys[registry.RoleAdmin])
	if err != nil {
		t.Fatal(err)
	}

	p, err := c.CreateProfile(ctx, api.CreateProfileRequest{Name: "sensors", Strategy: registry.StrategyPreProvisioned})
	if err != nil || p.ProvisionDeviceSecret == "" {
		t.Fatalf("create profile: %+v, %v", p, err)
	}
	desc := "hall 3"
	if up, err := c.UpdateProfile(ctx, p.ID, api.UpdateProfileRequest{Description: &desc}); err != nil || up.Description != desc {
		t.Fatalf("update: %+v, %v", up, err)
	}
	if rp, err := c.RotateProfileSecret(ctx, p.ID); err != nil || rp.ProvisionDeviceSecret == p.ProvisionDeviceSecret {
		t.Fatalf("rotate: %v", err)
	}
	d, err := c.CreateDevice(ctx, api.CreateDeviceRequest{Name: "d1", ProfileName: "sensors", Credentials: &api.CredentialsInput{}})
	if err != nil || d.Credentials == nil || d.Credentials.Token == "" {
		t.Fatalf("create device: %+v, %v", d, err)
	}
	res, err := c.ImportDevices(ctx, strings.NewReader("name,mac\nd2,a\nd3,b\n"), -1, apiclient.ImportOptions{ProfileID: p.ID})
	if err != nil || res.Created != 2 {
		t.Fatalf("import: %+v, %v", res, err)
	}
	no := false
	l, err := c.ListDevices(ctx, apiclient.DeviceFilter{ProfileName: "sensors", Provisioned: &no, Limit: 2})
	if err != nil || len(l.Items) != 2 || l.Next == "" {
		t.Fatalf("list: %+v, %v", l, err)
	}
	if dd, err := c.SetDeviceEnabled(ctx, d.ID, false); err != nil || dd.Status != registry.DeviceDisabled {
		t.Fatalf("disable: %v", err)
	}
	cs, err := c.ListCredentials(ctx, d.ID)
	if err != nil || len(cs) != 1 {
		t.Fatalf("credentials: %v", err)
	}
	if cr, err := c.RevokeCredential(ctx, cs[0].ID); err != nil || cr.Status != registry.CredentialRevoked {
		t.Fatalf("revoke: %v", err)
	}
	if err := c.DeleteDevice(ctx, d.ID); err != nil {
		t.Fatal(err)
	}
	ev, err := c.ListAudit(ctx, apiclient.AuditFilter{Action: "device.delete"})
	if err != nil || len(ev.Items) != 1 {
		t.Fatalf("audit: %+v, %v", ev, err)
	}
	k, err := c.CreateAPIKey(ctx, api.CreateAPIKeyRequest{Name: "ci", Role: registry.RoleViewer})
	if err != nil || k.Key == "" {
		t.Fatalf("apikey: %v", err)
	}
	if err := c.DeleteAPIKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
}

func TestErrors(t *testing.T) {
	srv := apitest.New(t)
	ctx := context.Background()
	viewer, _ := apiclient.New(srv.URL, srv.Keys[registry.RoleViewer])
	wrong, _ := apiclient.New(srv.URL, "wrong")
	admin, _ := apiclient.New(srv.URL, srv.Keys[registry.RoleAdmin])
	p, err := admin.CreateProfile(ctx, api.CreateProfileRequest{Name: "p", Strategy: registry.StrategyAllowCreate})
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name   string
		call   func() error
		status int
		code   string
	}{
		{"unauthorized", func() error { _, err := wrong.ListProfiles(ctx, 0, ""); return err }, http.StatusUnauthorized, api.CodeUnauthorized},
		{"forbidden", func() error { return viewer.DeleteProfile(ctx, p.ID) }, http.StatusForbidden, api.CodeForbidden},
		{"not found", func() error { _, err := viewer.GetDevice(ctx, "nope"); return err }, http.StatusNotFound, api.CodeNotFound},
		{"id with a slash", func() error { _, err := viewer.GetDevice(ctx, "a/b"); return err }, http.StatusNotFound, api.CodeNotFound},
		{"invalid", func() error {
			_, err := admin.CreateProfile(ctx, api.CreateProfileRequest{Name: "q", Strategy: "sometimes"})
			return err
		}, http.StatusUnprocessableEntity, api.CodeInvalid},
		{"conflict", func() error {
			_, err := admin.CreateProfile(ctx, api.CreateProfileRequest{Name: "p", Strategy: registry.StrategyAllowCreate})
			return err
		}, http.StatusConflict, api.CodeConflict},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var e *apiclient.Error
			err := c.call()
			if !errors.As(err, &e) || e.Status != c.status || e.Code != c.code || e.Message == "" {
				t.Fatalf("got %#v (%v)", err, err)
			}
		})
	}

	t.Run("import refused lists the rows", func(t *testing.T) {
		res, err := admin.ImportDevices(ctx, strings.NewReader("name\nok\n\n,\n"), -1, apiclient.ImportOptions{ProfileName: "p"})
		var e *apiclient.Error
		if !errors.As(err, &e) || e.Status != http.StatusUnprocessableEntity || len(res.Errors) != 1 || res.Errors[0].Line != 4 {
			t.Fatalf("got %+v, %v", res, err)
		}
	})

	t.Run("unreachable", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close() // nothing listens there now
		c, _ := apiclient.New("http://"+addr, "k")
		if _, err := c.ListProfiles(ctx, 0, ""); !errors.Is(err, apiclient.ErrUnreachable) {
			t.Fatalf("got %v", err)
		}
	})

	t.Run("bad base URL", func(t *testing.T) {
		for _, u := range []string{"", "127.0.0.1:8080", "ftp://x", "http://"} {
			if _, err := apiclient.New(u, "k"); err == nil {
				t.Errorf("%q accepted", u)
			}
		}
	})
}
