package api

import (
	_ "embed"
	"net/http"

	"github.com/zerotouch/zerotouch/internal/registry"
)

// openAPIDoc describes every route of the table in routes; openapi_test.go
// checks that they match.
//
//go:embed openapi.yaml
var openAPIDoc []byte

func (s *server) openAPI(w http.ResponseWriter, _ *http.Request, _ *registry.APIKey) error {
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(openAPIDoc)
	return nil
}
