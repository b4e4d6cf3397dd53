package apiclient_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/api/apitest"
	"github.com/zerotouch/zerotouch/internal/apiclient"
	"github.com/zerotouch/zerotouch/internal/registry"
)

func TestHubClient(t *testing.T) {
	srv := apitest.New(t)
	ctx := context.Background()
	op, err := apiclient.New(srv.URL, srv.Keys[registry.RoleOperator])
	if err != nil {
		t.Fatal(err)
	}
	viewer, err := apiclient.New(srv.URL, srv.Keys[registry.RoleViewer])
	if err != nil {
		t.Fatal(err)
	}
	w := 3
	h, err := op.CreateHub(ctx, api.CreateHubRequest{Name: "Hub-A.example.com:8883", Weight: &w, Region: "eu-west"})
	if err != nil || h.Name != "Hub-A.example.com:8883" || h.Weight != 3 || !h.Enabled || h.Version != 1 {
		t.Fatalf("create: %+v, %v", h, err)
	}
	l, err := viewer.ListHubs(ctx, 0, "")
	if err != nil || len(l.Items) != 1 || l.Items[0].Name != h.Name {
		t.Fatalf("list: %+v, %v", l, err)
	}
	off := false
	if h, err = op.UpdateHub(ctx, "hub-a.example.com:8883", api.UpdateHubRequest{Enabled: &off}); err != nil || h.Enabled || h.Version != 2 {
		t.Fatalf("update: %+v, %v", h, err)
	}
	got, err := viewer.GetHub(ctx, "HUB-A.example.com:8883")
	if err != nil || got.Enabled || got.Builtin {
		t.Fatalf("get: %+v, %v", got, err)
	}
	var ae *apiclient.Error
	if _, err := viewer.CreateHub(ctx, api.CreateHubRequest{Name: "b.example.com"}); !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
		t.Fatalf("create as viewer: %v", err)
	}
	if err := op.DeleteHub(ctx, "hub-a.example.com:8883"); err != nil {
		t.Fatal(err)
	}
	if _, err := viewer.GetHub(ctx, "hub-a.example.com:8883"); !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Fatalf("get after delete: %v", err)
	}
}
