package api

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"

	"github.com/zerotouch/zerotouch/internal/registry"
)

// List is one page of a list response. Next, when set, is passed back as
// the "after" parameter (or "before" for audit events) for the next page.
type List[T any] struct {
	Items []T    `json:"items"`
	Next  string `json:"next,omitempty"`
}

func newList[T any](items []T, next string) List[T] {
	if items == nil {
		items = []T{} // "items": [] rather than null
	}
	return List[T]{Items: items, Next: next}
}

// queryInt parses an optional non-negative integer parameter (0 when absent).
func queryInt(q url.Values, name string) (int64, error) {
	v := q.Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, badRequest("query parameter %s=%q: want a non-negative integer", name, v)
	}
	return n, nil
}

// queryBool parses an optional boolean parameter (nil when absent).
func queryBool(q url.Values, name string) (*bool, error) {
	v := q.Get(name)
	if v == "" {
		return nil, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return nil, badRequest("query parameter %s=%q: want true or false", name, v)
	}
	return &b, nil
}

// listOptions reads the "limit" and "after" parameters.
func listOptions(q url.Values) (registry.ListOptions, error) {
	limit, err := queryInt(q, "limit")
	if err != nil {
		return registry.ListOptions{}, err
	}
	return registry.ListOptions{Limit: int(min(limit, registry.MaxPageSize)), After: q.Get("after")}, nil
}

// resolveProfile finds the profile a request refers to by id or by name.
// A reference to a missing profile is invalid input (422), not a missing
// resource: the route itself exists.
func (s *server) resolveProfile(ctx context.Context, orgID, id, name string) (*registry.Profile, error) {
	switch {
	case id != "" && name != "":
		return nil, badRequest("give profileId or profileName, not both")
	case id != "":
		p, err := s.store.GetProfile(ctx, orgID, id)
		if errors.Is(err, registry.ErrNotFound) {
			return nil, invalid("no profile with id %q", id)
		}
		return p, err
	case name != "":
		// The store has no lookup by name; profiles are few, so page through.
		opts := registry.ListOptions{Limit: registry.MaxPageSize}
		for {
			ps, next, err := s.store.ListProfiles(ctx, orgID, opts)
			if err != nil {
				return nil, fmt.Errorf("listing profiles: %w", err)
			}
			for i := range ps {
				if ps[i].Name == name {
					return &ps[i], nil
				}
			}
			if next == "" {
				return nil, invalid("no profile named %q", name)
			}
			opts.After = next
		}
	}
	return nil, invalid("profileId or profileName is required")
}
