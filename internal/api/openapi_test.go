package api

import (
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// openAPIOperation is the part of an OpenAPI operation the test checks.
type openAPIOperation struct {
	Role       string           `yaml:"x-role"`
	Parameters []map[string]any `yaml:"parameters"`
	Security   *[]any           `yaml:"security"`
	Responses  map[string]any   `yaml:"responses"`
}

// TestOpenAPIMatchesRoutes checks that openapi.yaml describes exactly the
// routes the handler registers, with their roles, path parameters and
// authentication answers, and that every $ref resolves.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc map[string]any
	if err := yaml.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatal(err)
	}
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.") {
		t.Fatalf("openapi version %q", v)
	}

	var typed struct {
		Paths map[string]map[string]yaml.Node `yaml:"paths"`
	}
	if err := yaml.Unmarshal(openAPIDoc, &typed); err != nil {
		t.Fatal(err)
	}
	methods := map[string]bool{"get": true, "put": true, "post": true, "delete": true, "patch": true, "head": true, "options": true, "trace": true}
	documented := map[string]openAPIOperation{}
	for path, item := range typed.Paths {
		var pathParams []map[string]any
		if n, ok := item["parameters"]; ok {
			if err := n.Decode(&pathParams); err != nil {
				t.Fatal(err)
			}
		}
		for m, n := range item {
			if !methods[m] {
				continue
			}
			var op openAPIOperation
			if err := n.Decode(&op); err != nil {
				t.Fatalf("%s %s: %v", m, path, err)
			}
			op.Parameters = append(op.Parameters, pathParams...)
			documented[strings.ToUpper(m)+" "+path] = op
		}
	}

	s := &server{}
	registered := map[string]route{}
	for _, rt := range s.routes() {
		registered[rt.method+" "+rt.pattern] = rt
	}
	if got, want := slices.Sorted(maps.Keys(documented)), slices.Sorted(maps.Keys(registered)); !slices.Equal(got, want) {
		t.Fatalf("openapi.yaml and the route table differ\ndocumented: %v\nregistered: %v", got, want)
	}

	pathParam := regexp.MustCompile(`\{(\w+)\}`)
	for key, rt := range registered {
		op := documented[key]
		if op.Role != rt.min.String() {
			t.Errorf("%s: x-role %q, route needs %q", key, op.Role, rt.min)
		}
		public := op.Security != nil && len(*op.Security) == 0
		if public != (rt.min == rolePublic) {
			t.Errorf("%s: documented public=%v, route public=%v", key, public, rt.min == rolePublic)
		}
		if !public {
			for _, code := range []string{"401", "403"} {
				if _, ok := op.Responses[code]; !ok {
					t.Errorf("%s: no %s response documented", key, code)
				}
			}
		}
		for _, m := range pathParam.FindAllStringSubmatch(rt.pattern, -1) {
			if !hasPathParam(doc, op.Parameters, m[1]) {
				t.Errorf("%s: path parameter %q not documented", key, m[1])
			}
		}
	}

	// Every $ref points at something.
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok && resolve(doc, ref) == nil {
				t.Errorf("unresolved $ref %q", ref)
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(doc)
}

func hasPathParam(doc map[string]any, params []map[string]any, name string) bool {
	for _, p := range params {
		if ref, ok := p["$ref"].(string); ok {
			p, _ = resolve(doc, ref).(map[string]any)
		}
		if p["in"] == "path" && p["name"] == name && p["required"] == true {
			return true
		}
	}
	return false
}

// resolve follows a local JSON pointer such as #/components/schemas/Error.
func resolve(doc map[string]any, ref string) any {
	var cur any = doc
	for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[part]
	}
	return cur
}
