package apiclient

import (
	"context"
	"net/http"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// IoT hubs linked to the organisation's DPS.

// CreateHub registers a hub for DPS allocation.
func (c *Client) CreateHub(ctx context.Context, in api.CreateHubRequest) (*registry.Hub, error) {
	var out registry.Hub
	return &out, c.do(ctx, request{method: http.MethodPost, path: "/api/hubs", in: in}, &out)
}

// ListHubs returns one page of hubs; the first page starts with the
// server's built-in hub.
func (c *Client) ListHubs(ctx context.Context, limit int, after string) (*api.List[api.HubInfo], error) {
	var out api.List[api.HubInfo]
	return &out, c.do(ctx, request{method: http.MethodGet, path: "/api/hubs", query: listQuery(limit, after)}, &out)
}

// GetHub returns the hub with the name (any case), the built-in hub too.
func (c *Client) GetHub(ctx context.Context, name string) (*api.HubInfo, error) {
	var out api.HubInfo
	return &out, c.do(ctx, request{method: http.MethodGet, path: pathOf("/api/hubs/%s", name)}, &out)
}

// UpdateHub changes the fields set in in.
func (c *Client) UpdateHub(ctx context.Context, name string, in api.UpdateHubRequest) (*registry.Hub, error) {
	var out registry.Hub
	return &out, c.do(ctx, request{method: http.MethodPatch, path: pathOf("/api/hubs/%s", name), in: in}, &out)
}

// DeleteHub unlinks a registered hub.
func (c *Client) DeleteHub(ctx context.Context, name string) error {
	return c.do(ctx, request{method: http.MethodDelete, path: pathOf("/api/hubs/%s", name)}, nil)
}
