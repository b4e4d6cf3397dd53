package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
)

func (s *server) listAudit(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	q := r.URL.Query()
	f := registry.AuditFilter{DeviceID: q.Get("deviceId"), Action: q.Get("action"), Result: q.Get("result")}
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return badRequest("query parameter since=%q: want an RFC 3339 time such as 2025-01-02T15:04:05Z", v)
		}
		f.Since = t
	}
	var err error
	if f.Before, err = queryInt(q, "before"); err != nil {
		return err
	}
	opts, err := listOptions(q)
	if err != nil {
		return err
	}
	f.Limit = opts.EffectiveLimit()
	evs, err := s.store.ListAudit(r.Context(), key.OrgID, f)
	if err != nil {
		return err
	}
	// Events are newest first; a full page may have older ones after it
	// (or not: the next page may be empty, which is cheaper than asking for one more).
	var next string
	if len(evs) == f.Limit {
		next = strconv.FormatInt(evs[len(evs)-1].Seq, 10)
	}
	writeJSON(w, http.StatusOK, newList(evs, next))
	return nil
}
