// Package registry holds zerotouch's domain types (organisations, device
// profiles, devices, credentials, audit events, API keys) and the Store
// interface that every storage backend implements.
//
// Nothing here knows about SQL, MQTT or HTTP: the store packages implement
// Store, the provisioning pipeline and the management API use it.
package registry

import (
	"errors"
	"fmt"
	"time"
)

// DefaultOrgID is the organisation every record belongs to until
// multi-tenancy arrives. It is created by the first migration.
const DefaultOrgID = "00000000-0000-0000-0000-000000000001"

// Errors returned by every Store implementation; callers test them with errors.Is.
var (
	// ErrNotFound: the record does not exist (or belongs to another organisation).
	ErrNotFound = errors.New("not found")
	// ErrConflict: a uniqueness rule or an optimistic-concurrency check failed.
	// Stores wrap it in a *ConflictError naming what collided.
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the record breaks a domain rule (see Validate methods).
	ErrInvalid = errors.New("invalid")
)

// ConflictError says which uniqueness rule a write broke. It matches ErrConflict.
type ConflictError struct {
	// What collided: "device" (name taken or version changed), "profile" (name
	// or provision key taken, or version changed), "credential" (lookup key or
	// MQTT user name in use by another active credential), "apikey" (hash
	// taken, or the organisation's last admin key), "enrollment"
	// (registration id taken or version changed), "enrollmentGroup" (group
	// id taken or version changed).
	What string
	// Detail is a human sentence, safe to show to an operator.
	Detail string
}

func (e *ConflictError) Error() string {
	if e.Detail != "" {
		return fmt.Sprintf("%s conflict: %s", e.What, e.Detail)
	}
	return e.What + " conflict"
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Conflict builds a *ConflictError.
func Conflict(what, detail string) error { return &ConflictError{What: what, Detail: detail} }

// Organisation is a tenant. Every other record carries the ID of one.
type Organisation struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"createdAt"`
}

// ListOptions asks for one page of a list ordered by a stable key.
type ListOptions struct {
	// Limit caps the page size; 0 means DefaultPageSize, values above
	// MaxPageSize are clamped.
	Limit int
	// After is the opaque cursor returned as Next by the previous page.
	After string
}

// Page sizes.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// EffectiveLimit returns the page size to use for o.
func (o ListOptions) EffectiveLimit() int {
	switch {
	case o.Limit <= 0:
		return DefaultPageSize
	case o.Limit > MaxPageSize:
		return MaxPageSize
	}
	return o.Limit
}
