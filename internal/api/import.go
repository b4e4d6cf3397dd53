package api

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// ImportResult is the answer to POST /api/devices/import. On success
// (200) Created counts the devices written and Skipped lists the invalid
// rows left out (skipInvalid=true). When invalid rows refuse the whole
// import (422), Code and Message say so, Created is 0 and Errors lists
// every invalid row.
type ImportResult struct {
	Code    string     `json:"code,omitempty"`
	Message string     `json:"message,omitempty"`
	Created int        `json:"created"`
	Skipped []RowError `json:"skipped"`
	Errors  []RowError `json:"errors"`
}

// RowError is one invalid row of an import file; Line is the file's line
// number (the header is line 1) where the row starts.
type RowError struct {
	Line  int    `json:"line"`
	Error string `json:"error"`
}

// Columns of an import file with a meaning of their own; every other
// column is a device attribute named as in the header. Column names are
// matched and compared for duplicates without regard to case.
const (
	colName            = "name"
	colCredentialsType = "credentialsType"
	colToken           = "token"
	colClientID        = "clientId"
	colUsername        = "username"
	colPassword        = "password"
	colCertificate     = "certificate"
)

// importRow is one data row of an import file.
type importRow struct {
	line  int
	name  string
	cred  *provision.CredentialsRequest // nil: the device gets credentials when it provisions
	attrs map[string]any
	err   error // the row is unusable; the other fields may be partial
}

// parseImportCSV reads an import file, a header row then one device per
// row, and hands each row to add as it is read, so that a large file is
// never held twice. A row that cannot be used (wrong number of fields,
// invalid UTF-8, inconsistent credentials) comes with its err set; the
// error returned is for the file as a whole (no header, CSV syntax, read
// failure), after which line numbers would mean nothing.
func parseImportCSV(r io.Reader, add func(importRow)) error {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return badRequest("the CSV file is empty: a header row naming the columns is required")
	}
	if err != nil {
		return csvError(err)
	}
	cols := make([]string, len(header)) // canonical known name, or the attribute name
	seen := map[string]bool{}
	for i, h := range header {
		h = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")) // Excel writes a BOM
		if !utf8.ValidString(h) || h == "" {
			return badRequest("CSV header: column %d has an empty or non-UTF-8 name", i+1)
		}
		for _, k := range [...]string{colName, colCredentialsType, colToken, colClientID, colUsername, colPassword, colCertificate} {
			if strings.EqualFold(h, k) {
				h = k
			}
		}
		if seen[strings.ToLower(h)] { // "mac" and "MAC" would be two confusable attributes
			return badRequest("CSV header: column %q appears twice", h)
		}
		seen[strings.ToLower(h)] = true
		cols[i] = h
	}
	if !seen[strings.ToLower(colName)] {
		return badRequest("CSV header: the %q column is required", colName)
	}

	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil && !errors.Is(err, csv.ErrFieldCount) {
			return csvError(err)
		}
		line, _ := cr.FieldPos(0) // a record came back, so field 0 exists
		row := importRow{line: line}
		if err != nil {
			row.err = fmt.Errorf("%w: the row has %d field(s) but the header has %d", registry.ErrInvalid, len(rec), len(cols))
		} else {
			row.fill(cols, rec)
		}
		add(row)
	}
}

func csvError(err error) error {
	var pe *csv.ParseError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return tooLarge(mbe.Limit)
	case errors.As(err, &pe):
		return badRequest("CSV syntax error on line %d, column %d: %v", pe.StartLine, pe.Column, pe.Err)
	}
	return badRequest("reading the CSV body: %v", err)
}

// fill sets the row's fields from a record with one field per column.
func (row *importRow) fill(cols, rec []string) {
	var typ string
	var c provision.CredentialsRequest
	for i, v := range rec {
		if !utf8.ValidString(v) {
			row.err = fmt.Errorf("%w: column %q is not valid UTF-8", registry.ErrInvalid, cols[i])
			return
		}
		switch cols[i] {
		case colName:
			row.name = strings.TrimSpace(v)
		case colCredentialsType:
			typ = strings.TrimSpace(v)
		case colToken:
			c.Token = v
		case colClientID:
			c.ClientID = v
		case colUsername:
			c.Username = v
		case colPassword:
			c.Password = v
		case colCertificate:
			c.Certificate = v
		default:
			if v = strings.TrimSpace(v); v != "" { // an empty cell sets no attribute
				if row.attrs == nil {
					row.attrs = map[string]any{}
				}
				row.attrs[cols[i]] = v
			}
		}
	}
	row.cred, row.err = rowCredentials(registry.CredentialType(typ), c)
}

// rowCredentials decides which credential a row asks for. The type may be
// left out when the filled columns imply it. An import never generates
// credentials: nobody would see them.
func rowCredentials(t registry.CredentialType, c provision.CredentialsRequest) (*provision.CredentialsRequest, error) {
	var given []registry.CredentialType
	if c.Token != "" {
		given = append(given, registry.CredentialAccessToken)
	}
	if c.ClientID != "" || c.Username != "" || c.Password != "" {
		given = append(given, registry.CredentialMQTTBasic)
	}
	if c.Certificate != "" {
		given = append(given, registry.CredentialX509)
	}
	switch {
	case t == "" && len(given) == 0:
		return nil, nil
	case t != "" && !t.Valid():
		return nil, fmt.Errorf("%w: unknown credentialsType %q (want ACCESS_TOKEN, MQTT_BASIC or X509_CERTIFICATE)", provision.ErrBadCredentials, t)
	case len(given) > 1:
		return nil, fmt.Errorf("%w: columns of several credential types are filled", provision.ErrBadCredentials)
	case t == "":
		t = given[0]
	case len(given) == 0:
		return nil, fmt.Errorf("%w: credentialsType %s without its values (an import does not generate credentials)", provision.ErrBadCredentials, t)
	case given[0] != t:
		return nil, fmt.Errorf("%w: credentialsType %s, but the columns filled are for %s", provision.ErrBadCredentials, t, given[0])
	}
	c.Type = t
	return &c, nil
}

// plannedDevice is a row turned into what to store.
type plannedDevice struct {
	line int
	nd   registry.NewDevice
}

// importPlan turns rows into the devices to create in profile p, and
// reports the invalid ones, including names and credentials repeated
// within the file. It does not look at the store.
type importPlan struct {
	p       *registry.Profile
	now     time.Time
	ok      []plannedDevice
	bad     []RowError
	names   map[string]int // name → line of its first row
	lookups map[string]int // credential type and lookup key → line
}

func newImportPlan(p *registry.Profile, now time.Time) *importPlan {
	return &importPlan{p: p, now: now, names: map[string]int{}, lookups: map[string]int{}}
}

func (pl *importPlan) add(row importRow) {
	if err := pl.plan(row); err != nil {
		pl.bad = append(pl.bad, RowError{row.line, domainMessage(err)})
	}
}

func (pl *importPlan) plan(row importRow) error {
	if row.err != nil {
		return row.err
	}
	d := registry.Device{
		ID: uuid.NewString(), OrgID: pl.p.OrgID, ProfileID: pl.p.ID, Name: row.name,
		Status: registry.DeviceEnabled, Attributes: row.attrs, CreatedAt: pl.now, UpdatedAt: pl.now,
	}
	if err := d.Validate(); err != nil {
		return err
	}
	if first, dup := pl.names[d.Name]; dup {
		return fmt.Errorf("device name %q already appears on line %d", d.Name, first)
	}
	nd := registry.NewDevice{Device: d}
	if row.cred != nil {
		c, _, err := provision.BuildCredential(*row.cred, pl.p.DefaultCredentialType, pl.now)
		if err != nil {
			return err
		}
		lk := string(c.Type) + "\x00" + c.LookupKey
		if first, dup := pl.lookups[lk]; dup {
			return fmt.Errorf("the same %s credentials already appear on line %d", c.Type, first)
		}
		pl.lookups[lk] = row.line
		c.OrgID, c.DeviceID = d.OrgID, d.ID
		nd.Credentials = []registry.Credential{c}
	}
	pl.names[d.Name] = row.line
	pl.ok = append(pl.ok, plannedDevice{row.line, nd})
	return nil
}

func (s *server) importDevices(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	ctx := r.Context()
	q := r.URL.Query()
	skipInvalid, err := queryBool(q, "skipInvalid")
	if err != nil {
		return err
	}
	p, err := s.resolveProfile(ctx, key.OrgID, q.Get("profileId"), q.Get("profileName"))
	if err != nil {
		return err
	}
	// The server's read timeout suits small JSON bodies; a large file on a
	// slow link needs longer.
	http.NewResponseController(w).SetReadDeadline(time.Now().Add(importReadTimeout))
	body, err := limitBody(w, r, s.importLimit)
	if err != nil {
		return err
	}
	plan := newImportPlan(p, time.Now().UTC())
	if err := parseImportCSV(body, plan.add); err != nil {
		return err
	}
	bad := plan.bad

	// Rows that collide with what is already stored are invalid rows too,
	// reported by line; a collision racing in after this check fails the
	// whole CreateDevices call with a 409 instead.
	valid := make([]registry.NewDevice, 0, len(plan.ok))
	for _, pd := range plan.ok {
		taken, err := s.taken(ctx, pd.nd)
		if err != nil {
			return err
		}
		if taken != "" {
			bad = append(bad, RowError{pd.line, taken})
			continue
		}
		valid = append(valid, pd.nd)
	}
	slices.SortFunc(bad, func(a, b RowError) int { return a.Line - b.Line })

	res := ImportResult{Skipped: []RowError{}, Errors: []RowError{}}
	if len(bad) > 0 && (skipInvalid == nil || !*skipInvalid) {
		res.Code, res.Errors = CodeInvalid, bad
		res.Message = fmt.Sprintf("%d invalid rows; nothing was imported (skipInvalid=true imports the valid rows)", len(bad))
		writeJSON(w, http.StatusUnprocessableEntity, res)
		return nil
	}
	if len(valid) > 0 {
		if err := s.store.CreateDevices(ctx, valid); err != nil {
			return err
		}
	}
	res.Created, res.Skipped = len(valid), append(res.Skipped, bad...)
	s.audit(r, key, registry.AuditEvent{Action: "device.import", ProfileID: p.ID,
		Detail: fmt.Sprintf("imported %d devices into profile %s from CSV (%d invalid rows skipped)", len(valid), p.Name, len(bad))})
	writeJSON(w, http.StatusOK, res)
	return nil
}

// taken says what of the device is already taken in the store (its name or
// its credentials), or "" when nothing is.
func (s *server) taken(ctx context.Context, nd registry.NewDevice) (string, error) {
	_, err := s.store.GetDeviceByName(ctx, nd.Device.OrgID, nd.Device.Name)
	switch {
	case err == nil:
		return fmt.Sprintf("a device named %q already exists", nd.Device.Name), nil
	case !errors.Is(err, registry.ErrNotFound):
		return "", fmt.Errorf("checking device name: %w", err)
	}
	for _, c := range nd.Credentials {
		_, _, err := s.store.FindActiveCredential(ctx, c.Type, c.LookupKey)
		switch {
		case err == nil:
			return fmt.Sprintf("these %s credentials are already used by another device", c.Type), nil
		case !errors.Is(err, registry.ErrNotFound):
			return "", fmt.Errorf("checking credentials: %w", err)
		}
	}
	return "", nil
}
