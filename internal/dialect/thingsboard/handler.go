package thingsboard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/zerotouch/zerotouch/internal/provision"
)

// Handler answers ThingsBoard provisioning requests over MQTT and HTTP.
type Handler struct {
	svc *provision.Service
}

// NewHandler returns a Handler that provisions through svc.
func NewHandler(svc *provision.Service) *Handler { return &Handler{svc: svc} }

// Provision handles one request payload from source (an IP address) and
// returns the answer to send, and whether the payload could be decoded at
// all. The answer is ready only once the provisioning transaction is durable.
func (h *Handler) Provision(ctx context.Context, source string, payload []byte) (resp Response, decoded bool) {
	req, err := Decode(payload)
	if err != nil {
		return h.refuse(ctx, source, err.Error()), false
	}
	res, err := h.svc.Provision(ctx, req.ToProvision(source))
	if err != nil {
		return Failure(err), true
	}
	return Success(res), true
}

func (h *Handler) refuse(ctx context.Context, source, msg string) Response {
	return Failure(h.svc.Refuse(ctx, provision.Request{Dialect: Dialect, Source: source}, provision.ReasonBadRequest, msg))
}

// HandleMQTT is the hub's provisioning callback: the payload published on
// RequestTopic in, the payload for ResponseTopic out.
func (h *Handler) HandleMQTT(ctx context.Context, remoteAddr string, payload []byte) []byte {
	resp, _ := h.Provision(ctx, provision.SourceHost(remoteAddr), payload)
	return resp.Encode()
}

// ServeHTTP serves POST /api/v1/provision. Like ThingsBoard it answers 200
// with the JSON status for every well-formed request, refusals included; a
// body that is not a provisioning request gets 400 (413 when too large) with
// the same JSON shape.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	source := provision.SourceHost(r.RemoteAddr)
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestSize))
	if err != nil {
		status := http.StatusBadRequest
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			status = http.StatusRequestEntityTooLarge
			err = fmt.Errorf("request is larger than %d bytes", MaxRequestSize)
		}
		w.WriteHeader(status)
		w.Write(h.refuse(r.Context(), source, "request body could not be read: "+err.Error()).Encode())
		return
	}
	resp, decoded := h.Provision(r.Context(), source, body)
	if !decoded {
		w.WriteHeader(http.StatusBadRequest)
	}
	w.Write(resp.Encode())
}
