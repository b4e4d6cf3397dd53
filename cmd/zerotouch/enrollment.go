package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/apiclient"
	"github.com/zerotouch/zerotouch/internal/attest"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// Azure DPS enrollments: zerotouch enrollment …, zerotouch enrollment
// group …, and zerotouch idscope.

func newIDScopeCmd(o *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "idscope",
		Short: "Print the Azure DPS ID scope devices are configured with",
		Long: "Print the organisation's Azure DPS ID scope (\"0ne\" and eight hex digits): Azure IoT devices\n" +
			"carry it in their firmware with the provisioning endpoint. It never changes.",
		Args: exactArgs(0),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			scope, err := c.IDScope(ctx)
			if err != nil {
				return err
			}
			return o.print(cmd, api.IDScope{IDScope: scope}, func(w io.Writer) { fmt.Fprintln(w, scope) })
		}),
	}
}

func newEnrollmentCmd(o *clientOptions) *cobra.Command {
	cmd := newGroupCmd("enrollment", "Manage Azure DPS individual enrollments and enrollment groups",
		newEnrollmentCreateCmd(o),
		newEnrollmentListCmd(o),
		newEnrollmentShowCmd(o),
		newEnrollmentUpdateCmd(o),
		newEnrollmentStatusCmd(o, true),
		newEnrollmentStatusCmd(o, false),
		o.deleteCmd("enrollment", "Delete an individual enrollment", (*apiclient.Client).DeleteEnrollment),
		newDeriveKeyOfflineCmd(o),
		newEnrollmentGroupCmd(o),
	)
	cmd.Long = "Manage Azure DPS enrollments. An individual enrollment admits one device, known by its\n" +
		"registration id and how it attests (symmetric key, X.509 leaf certificate or TPM endorsement key);\n" +
		"an enrollment group admits every device whose key derives from the group's key, or whose\n" +
		"certificate chains to the group's CA. A factory enrolls units disabled; the machine maker\n" +
		"enables them with their initial twin (an oem key may do that). Registration ids are\n" +
		"case-insensitive and kept in lower case. Symmetric keys are shown to operator and admin keys only."
	cmd.Aliases = []string{"enrollments"}
	return cmd
}

func newEnrollmentGroupCmd(o *clientOptions) *cobra.Command {
	return newGroupCmd("group", "Manage Azure DPS enrollment groups (a group key or a CA certificate)",
		newGroupCreateCmd(o),
		newGroupListCmd(o),
		newGroupShowCmd(o),
		newGroupUpdateCmd(o),
		newGroupStatusCmd(o, true),
		newGroupStatusCmd(o, false),
		o.deleteCmd("enrollment group", "Delete an enrollment group", (*apiclient.Client).DeleteEnrollmentGroup),
		newGroupDeriveKeyCmd(o),
		newGroupVerificationCodeCmd(o),
		newGroupVerifyCmd(o),
	)
}

// readValue returns v, or the content of the file it names as @file.
func readValue(flag, v string) ([]byte, error) {
	if name, ok := strings.CutPrefix(v, "@"); ok {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", flag, err)
		}
		return b, nil
	}
	return []byte(v), nil
}

// jsonFlag reads a JSON|@file flag value: a JSON object when object is
// set, any JSON value otherwise; null when allowNull (removes the value).
func jsonFlag(cmd *cobra.Command, flag, v string, object, allowNull bool) (json.RawMessage, error) {
	b, err := readValue(flag, v)
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSpace(b)
	if !json.Valid(b) {
		return nil, usageError(cmd, fmt.Errorf("--%s: not valid JSON (give JSON, or @file for a file of JSON)", flag))
	}
	if string(b) == "null" {
		if !allowNull {
			return nil, usageError(cmd, fmt.Errorf("--%s: null is not allowed here", flag))
		}
		return b, nil
	}
	if object && b[0] != '{' {
		return nil, usageError(cmd, fmt.Errorf("--%s: want a JSON object such as {\"location\":\"hall 3\"}", flag))
	}
	return b, nil
}

// keyFlag reads a key flag: the base64 key, or @file holding it.
func keyFlag(flag, v string) (string, error) {
	b, err := readValue(flag, v)
	return strings.TrimSpace(string(b)), err
}

// activationFlags are the settings an oem may change (ActivationSettings).
type activationFlags struct {
	hubs                   []string
	allocation             string
	tags, desired, payload string
}

func (a *activationFlags) register(f *pflag.FlagSet) {
	f.StringArrayVar(&a.hubs, "iot-hub", nil, "IoT hub the allocation may choose (repeat for several; empty means all)")
	f.StringVar(&a.allocation, "allocation-policy", "", "static, hashed, geoLatency or custom (default: the server's)")
	f.StringVar(&a.tags, "tags", "", "initial twin tags: a JSON object, or @file")
	f.StringVar(&a.desired, "desired", "", "initial twin desired properties: a JSON object, or @file")
	f.StringVar(&a.payload, "payload", "", "custom payload returned to the device: JSON, or @file")
}

// settings returns the activation settings of the flags given; with
// update, null removes tags, desired properties or payload, and
// --iot-hub ” empties the hub list.
func (a *activationFlags) settings(cmd *cobra.Command, update bool) (api.ActivationSettings, error) {
	var s api.ActivationSettings
	f := cmd.Flags()
	if f.Changed("iot-hub") {
		hubs := []string{}
		for _, h := range a.hubs {
			if h != "" {
				hubs = append(hubs, h)
			}
		}
		s.IoTHubs = &hubs
	}
	if f.Changed("allocation-policy") {
		s.AllocationPolicy = (*registry.AllocationPolicy)(&a.allocation)
	}
	var err error
	if f.Changed("tags") || f.Changed("desired") {
		s.InitialTwin = &api.InitialTwinUpdate{}
		if f.Changed("tags") {
			if s.InitialTwin.Tags, err = jsonFlag(cmd, "tags", a.tags, true, update); err != nil {
				return s, err
			}
		}
		if f.Changed("desired") {
			if s.InitialTwin.DesiredProperties, err = jsonFlag(cmd, "desired", a.desired, true, update); err != nil {
				return s, err
			}
		}
	}
	if f.Changed("payload") {
		if s.Payload, err = jsonFlag(cmd, "payload", a.payload, false, update); err != nil {
			return s, err
		}
	}
	return s, nil
}

// policies turns the activation settings of a create command into the
// policies of the new record.
func (a *activationFlags) policies(cmd *cobra.Command, disabled bool, reprovision string) (registry.EnrollmentPolicies, error) {
	s, err := a.settings(cmd, false)
	if err != nil {
		return registry.EnrollmentPolicies{}, err
	}
	p := registry.EnrollmentPolicies{ReprovisionPolicy: registry.EnrollmentReprovisionPolicy(reprovision)}
	if disabled {
		p.Status = registry.EnrollmentDisabled
	}
	if s.IoTHubs != nil {
		p.IoTHubs = *s.IoTHubs
	}
	if s.AllocationPolicy != nil {
		p.AllocationPolicy = *s.AllocationPolicy
	}
	if s.InitialTwin != nil {
		p.InitialTwin = registry.InitialTwin{Tags: s.InitialTwin.Tags, DesiredProperties: s.InitialTwin.DesiredProperties}
	}
	p.CustomPayload = s.Payload
	return p, nil
}

// attestationFlags choose an attestation mechanism.
type attestationFlags struct {
	symmetric           bool
	primary, secondary  string
	certificate, caCert string
	caVerified          bool
	tpmEK, tpmSRK       string
}

func (a *attestationFlags) register(f *pflag.FlagSet, group bool) {
	f.BoolVar(&a.symmetric, "symmetric-key", false, "attest with a symmetric key (generated unless --primary-key is given)")
	f.StringVar(&a.primary, "primary-key", "", "symmetric primary key, base64, or @file (implies --symmetric-key)")
	f.StringVar(&a.secondary, "secondary-key", "", "symmetric secondary key, base64, or @file")
	if group {
		f.StringVar(&a.caCert, "ca-certificate", "", "attest with this CA certificate (PEM file): devices whose certificate chains to it")
		f.BoolVar(&a.caVerified, "ca-verified", false, "with --ca-certificate: vouch that the CA is verified, without proof of possession (operator)")
		return
	}
	f.StringVar(&a.certificate, "certificate", "", "attest with the device's X.509 leaf certificate (PEM file)")
	f.StringVar(&a.tpmEK, "tpm-ek", "", "attest with the TPM endorsement key (public part, base64, or @file)")
	f.StringVar(&a.tpmSRK, "tpm-srk", "", "TPM storage root key (public part, base64, or @file; with --tpm-ek)")
}

// choice names the mechanism the flags choose, "" when none; two or more
// are a usage error.
func (a *attestationFlags) choice(cmd *cobra.Command) (registry.AttestationType, error) {
	f := cmd.Flags()
	var chosen []string
	var t registry.AttestationType
	if a.symmetric || f.Changed("primary-key") || f.Changed("secondary-key") {
		chosen, t = append(chosen, "--symmetric-key"), registry.AttestationSymmetricKey
	}
	if f.Changed("certificate") || f.Changed("ca-certificate") {
		chosen, t = append(chosen, "--certificate"), registry.AttestationX509
	}
	if f.Changed("tpm-ek") {
		chosen, t = append(chosen, "--tpm-ek"), registry.AttestationTPM
	}
	if f.Changed("tpm-srk") && !f.Changed("tpm-ek") {
		return "", usageError(cmd, errors.New("--tpm-srk needs --tpm-ek"))
	}
	if f.Changed("secondary-key") && !f.Changed("primary-key") {
		return "", usageError(cmd, errors.New("--secondary-key needs --primary-key"))
	}
	if f.Lookup("ca-verified") != nil && f.Changed("ca-verified") && !f.Changed("ca-certificate") {
		return "", usageError(cmd, errors.New("--ca-verified needs --ca-certificate"))
	}
	if len(chosen) > 1 {
		return "", usageError(cmd, fmt.Errorf("choose one attestation: %s", strings.Join(chosen, " or ")))
	}
	return t, nil
}

func (a *attestationFlags) symmetricKeys() (*registry.SymmetricKeyAttestation, error) {
	var k registry.SymmetricKeyAttestation
	var err error
	if a.primary != "" {
		if k.PrimaryKey, err = keyFlag("primary-key", a.primary); err != nil {
			return nil, err
		}
	}
	if a.secondary != "" {
		if k.SecondaryKey, err = keyFlag("secondary-key", a.secondary); err != nil {
			return nil, err
		}
	}
	return &k, nil
}

// enrollment returns the individual attestation the flags describe, nil
// when they name none (required makes that a usage error).
func (a *attestationFlags) enrollment(cmd *cobra.Command, required bool) (*registry.Attestation, error) {
	t, err := a.choice(cmd)
	if err != nil {
		return nil, err
	}
	at := &registry.Attestation{Type: t}
	switch t {
	case "":
		if required {
			return nil, usageError(cmd, errors.New("give the attestation: --symmetric-key, --certificate FILE or --tpm-ek KEY"))
		}
		return nil, nil
	case registry.AttestationSymmetricKey:
		at.SymmetricKey, err = a.symmetricKeys()
	case registry.AttestationX509:
		var pem []byte
		if pem, err = readLimited(a.certificate, registry.MaxEnrollmentPEM); err == nil {
			at.X509 = &registry.X509Attestation{CertificatePEM: string(pem)}
		}
	case registry.AttestationTPM:
		at.TPM = &registry.TPMAttestation{}
		if at.TPM.EndorsementKey, err = keyFlag("tpm-ek", a.tpmEK); err == nil && a.tpmSRK != "" {
			at.TPM.StorageRootKey, err = keyFlag("tpm-srk", a.tpmSRK)
		}
	}
	return at, err
}

// groupAttestation is enrollment for groups.
func (a *attestationFlags) groupAttestation(cmd *cobra.Command, required bool) (*registry.GroupAttestation, error) {
	t, err := a.choice(cmd)
	if err != nil {
		return nil, err
	}
	at := &registry.GroupAttestation{Type: t}
	switch t {
	case "":
		if required {
			return nil, usageError(cmd, errors.New("give the attestation: --symmetric-key or --ca-certificate FILE"))
		}
		return nil, nil
	case registry.AttestationSymmetricKey:
		at.SymmetricKey, err = a.symmetricKeys()
	case registry.AttestationX509:
		var pem []byte
		if pem, err = readLimited(a.caCert, registry.MaxEnrollmentPEM); err == nil {
			at.X509CA = &registry.X509CAAttestation{CACertificatePEM: string(pem), Verified: a.caVerified}
		}
	}
	return at, err
}

// Individual enrollments.

func newEnrollmentCreateCmd(o *clientOptions) *cobra.Command {
	var (
		req         api.CreateEnrollmentRequest
		att         attestationFlags
		act         activationFlags
		disabled    bool
		reprovision string
	)
	cmd := &cobra.Command{
		Use:   "create --registration-id ID (--symmetric-key | --certificate FILE | --tpm-ek KEY) [flags]",
		Short: "Create an individual enrollment (a factory station creates it --disabled)",
		Long: "Create an Azure DPS individual enrollment. With --symmetric-key and no --primary-key, two keys\n" +
			"are generated (64 random bytes, base64, as DPS does) and printed. The registration id is kept in\n" +
			"lower case. JSON flags take the JSON itself or @file.",
		Example: "  zerotouch enrollment create --registration-id press-0042 --symmetric-key --disabled\n" +
			"  zerotouch enrollment create --registration-id press-0043 --certificate unit.pem --iot-hub hub-eu --allocation-policy static\n" +
			"  zerotouch enrollment create --registration-id press-0044 --tpm-ek \"$EK\" --tags '{\"line\":\"A\"}'",
		Args: exactArgs(0),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			if req.RegistrationID == "" {
				return usageError(cmd, errors.New("--registration-id is required"))
			}
			at, err := att.enrollment(cmd, true)
			if err != nil {
				return err
			}
			req.Attestation = *at
			if req.EnrollmentPolicies, err = act.policies(cmd, disabled, reprovision); err != nil {
				return err
			}
			e, err := c.CreateEnrollment(ctx, req)
			if err != nil {
				return err
			}
			return o.print(cmd, e, func(w io.Writer) { enrollmentFields(w, e) })
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.RegistrationID, "registration-id", "", "the device's registration id (required)")
	f.StringVar(&req.DeviceID, "device-id", "", "the device's id on its hub (default: the registration id)")
	f.BoolVar(&disabled, "disabled", false, "create it disabled: the device is refused until the enrollment is enabled")
	f.StringVar(&reprovision, "reprovision-policy", "", "never, reprovision-and-reset or reprovision-and-migrate (default)")
	att.register(f, false)
	act.register(f)
	return cmd
}

func newEnrollmentListCmd(o *clientOptions) *cobra.Command {
	return listCmd(o, "List individual enrollments", (*apiclient.Client).ListEnrollments, func(w io.Writer, items []registry.Enrollment) {
		row(w, "REGISTRATION ID", "STATUS", "ATTESTATION", "DEVICE ID", "ALLOCATION", "IOT HUBS", "VERSION")
		for _, e := range items {
			row(w, e.RegistrationID, string(e.Status), string(e.Attestation.Type), orDash(e.DeviceID),
				allocationOf(&e.EnrollmentPolicies), orDash(strings.Join(e.IoTHubs, ",")), strconv.FormatInt(e.Version, 10))
		}
	})
}

func newEnrollmentShowCmd(o *clientOptions) *cobra.Command {
	return showCmd(o, "show REGISTRATION_ID", "Show an individual enrollment (its keys only to operator and admin keys)",
		(*apiclient.Client).GetEnrollment, enrollmentFields)
}

func newEnrollmentUpdateCmd(o *clientOptions) *cobra.Command {
	var (
		u        updateFlags
		deviceID string
	)
	cmd := &cobra.Command{
		Use:   "update REGISTRATION_ID [flags]",
		Short: "Change some fields of an individual enrollment",
		Long: "Change the fields given by flags; the others stay as they are. An oem key may change only\n" +
			"--status and the activation settings (--tags, --desired, --payload, --iot-hub,\n" +
			"--allocation-policy). --symmetric-key alone replaces the keys with generated ones. With\n" +
			"--if-version, the change is refused if the enrollment was written since that version.\n" +
			"In update, --tags null, --desired null and --payload null remove them; --iot-hub '' empties the hub list.",
		Example: "  zerotouch enrollment update press-0042 --tags '{\"chassis\":\"C-17\"}' --iot-hub hub-eu --allocation-policy static",
		Args:    exactArgs(1),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			var req api.UpdateEnrollmentRequest
			var err error
			if req.Attestation, err = u.att.enrollment(cmd, false); err != nil {
				return err
			}
			p, err := u.policies(cmd)
			if err != nil {
				return err
			}
			req.Status, req.ReprovisionPolicy, req.ActivationSettings, req.Version = p.status, p.reprovision, p.settings, p.version
			if cmd.Flags().Changed("device-id") {
				req.DeviceID = &deviceID
			}
			if req.Attestation == nil && req.DeviceID == nil && req.Status == nil && req.ReprovisionPolicy == nil && !u.act.any(cmd) {
				return usageError(cmd, errors.New("nothing to change: give at least one flag"))
			}
			e, err := c.UpdateEnrollment(ctx, args[0], req)
			if err != nil {
				return err
			}
			return o.print(cmd, e, func(w io.Writer) { enrollmentFields(w, e) })
		}),
	}
	f := cmd.Flags()
	f.StringVar(&deviceID, "device-id", "", "the device's id on its hub (operator)")
	u.register(f, "enrollment", false)
	return cmd
}

// updateFlags are the flags update takes for individual enrollments and
// groups alike (all but the attestation's and --device-id are the same),
// read by one piece of code for both.
type updateFlags struct {
	att                 attestationFlags
	act                 activationFlags
	status, reprovision string
	ifVersion           int64
}

// register adds the flags; what names the record in the --if-version
// help, group chooses the group attestation flags.
func (u *updateFlags) register(f *pflag.FlagSet, what string, group bool) {
	f.StringVar(&u.status, "status", "", "enabled or disabled")
	f.StringVar(&u.reprovision, "reprovision-policy", "", "never, reprovision-and-reset or reprovision-and-migrate (operator)")
	f.Int64Var(&u.ifVersion, "if-version", 0, "apply only if the "+what+" is still at this version")
	u.att.register(f, group)
	u.act.register(f)
}

// policyUpdate holds the fields UpdateEnrollmentRequest and
// UpdateEnrollmentGroupRequest share, nil where no flag sets them.
type policyUpdate struct {
	status      *registry.EnrollmentStatus
	reprovision *registry.EnrollmentReprovisionPolicy
	settings    api.ActivationSettings
	version     *int64
}

// policies reads the flags of the fields both update requests share: the
// activation settings (null removes), --status, --reprovision-policy and
// --if-version.
func (u *updateFlags) policies(cmd *cobra.Command) (policyUpdate, error) {
	var p policyUpdate
	var err error
	if p.settings, err = u.act.settings(cmd, true); err != nil {
		return p, err
	}
	f := cmd.Flags()
	if f.Changed("status") {
		p.status = (*registry.EnrollmentStatus)(&u.status)
	}
	if f.Changed("reprovision-policy") {
		p.reprovision = (*registry.EnrollmentReprovisionPolicy)(&u.reprovision)
	}
	if f.Changed("if-version") {
		p.version = &u.ifVersion
	}
	return p, nil
}

// any tells whether an activation flag was given.
func (a *activationFlags) any(cmd *cobra.Command) bool {
	f := cmd.Flags()
	for _, n := range []string{"iot-hub", "allocation-policy", "tags", "desired", "payload"} {
		if f.Changed(n) {
			return true
		}
	}
	return false
}

// newEnrollmentStatusCmd is enable (with the activation settings) or disable.
func newEnrollmentStatusCmd(o *clientOptions, enable bool) *cobra.Command {
	cmd := statusCmd(o, enable, "enrollment", (*apiclient.Client).SetEnrollmentEnabled, enrollmentFields)
	if !enable {
		cmd.Use = "disable REGISTRATION_ID"
		cmd.Short = "Disable an individual enrollment: the device's registrations are refused"
		return cmd
	}
	cmd.Use = "enable REGISTRATION_ID [flags]"
	cmd.Short = "Enable (activate) an individual enrollment, with its initial twin, hubs and payload"
	cmd.Long = "Enable an individual enrollment: the machine maker's activation. The activation settings\n" +
		"given (--tags, --desired, --payload, --iot-hub, --allocation-policy) are set in the same write.\n" +
		"An oem key may do this."
	cmd.Example = "  zerotouch enrollment enable press-0042 --tags '{\"chassis\":\"C-17\",\"site\":\"Lyon\"}' --desired @twin.json"
	return cmd
}

// statusCmd is the enable or disable command of individual enrollments
// and groups, which differ only in the record: enable also sets the
// activation settings given, in the same write. what names the record in
// the --if-version help, set is the client call, table prints the answer;
// the caller names the command and describes it.
func statusCmd[T any](o *clientOptions, enable bool, what string,
	set func(*apiclient.Client, context.Context, string, bool, api.ActivateEnrollmentRequest) (*T, error),
	table func(w io.Writer, v *T)) *cobra.Command {
	var (
		act       activationFlags
		ifVersion int64
	)
	cmd := &cobra.Command{
		Args: exactArgs(1),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			var req api.ActivateEnrollmentRequest
			var err error
			if enable {
				if req.ActivationSettings, err = act.settings(cmd, false); err != nil {
					return err
				}
			}
			if cmd.Flags().Changed("if-version") {
				req.Version = &ifVersion
			}
			v, err := set(c, ctx, args[0], enable, req)
			if err != nil {
				return err
			}
			return o.print(cmd, v, func(w io.Writer) { table(w, v) })
		}),
	}
	cmd.Flags().Int64Var(&ifVersion, "if-version", 0, "apply only if the "+what+" is still at this version")
	if enable {
		act.register(cmd.Flags())
	}
	return cmd
}

// newDeriveKeyOfflineCmd derives a device key from a group key on this
// machine, without a server.
func newDeriveKeyOfflineCmd(o *clientOptions) *cobra.Command {
	var groupKey, regID string
	cmd := &cobra.Command{
		Use:   "derive-key --group-key KEY --registration-id ID",
		Short: "Derive a device's key from a symmetric group key, offline (no server)",
		Long: "Derive the key of one device of a symmetric-key enrollment group, on this machine:\n" +
			"base64(HMAC-SHA256(group key, registration id)), as DPS and the Azure SDKs compute it. The\n" +
			"registration id is lower-cased first, as zerotouch keeps ids: the device must register with the\n" +
			"id printed. --group-key takes the base64 key or @file (a key on the command line ends up in the\n" +
			"shell's history). See also 'zerotouch enrollment group derive-key', which asks the server.",
		Example: "  zerotouch enrollment derive-key --group-key @group.key --registration-id press-0042",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.checkOutput(cmd); err != nil {
				return err
			}
			if groupKey == "" || regID == "" {
				return usageError(cmd, errors.New("--group-key and --registration-id are required"))
			}
			key, err := keyFlag("group-key", groupKey)
			if err != nil {
				return err
			}
			// ASCII only: strings.ToLower would turn look-alikes such as
			// the Kelvin sign into valid ids.
			id := strings.Map(func(r rune) rune {
				if 'A' <= r && r <= 'Z' {
					return r + ('a' - 'A')
				}
				return r
			}, regID)
			if err := registry.ValidateRegistrationID("registration id", id); err != nil {
				return usageError(cmd, fmt.Errorf("--registration-id: %s", strings.TrimPrefix(err.Error(), registry.ErrInvalid.Error()+": ")))
			}
			if id != regID {
				cmd.PrintErrf("registration ids are case-insensitive: deriving from %q\n", id)
			}
			dk, err := attest.DeriveDeviceKey(key, id)
			if err != nil {
				return usageError(cmd, errors.New("--group-key: not a base64 key"))
			}
			out := api.DerivedDeviceKey{RegistrationID: id, DeviceKey: dk}
			return o.print(cmd, out, func(w io.Writer) { derivedKeyFields(w, &out) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&groupKey, "group-key", "", "the group's symmetric key, base64, or @file (required)")
	f.StringVar(&regID, "registration-id", "", "the device's registration id (required)")
	return cmd
}

// Enrollment groups.

func newGroupCreateCmd(o *clientOptions) *cobra.Command {
	var (
		req         api.CreateEnrollmentGroupRequest
		att         attestationFlags
		act         activationFlags
		disabled    bool
		reprovision string
	)
	cmd := &cobra.Command{
		Use:   "create GROUP_ID (--symmetric-key | --ca-certificate FILE) [flags]",
		Short: "Create an enrollment group",
		Long: "Create an Azure DPS enrollment group. With --symmetric-key and no --primary-key, two group keys\n" +
			"are generated and printed; each device gets a key derived from them (see derive-key). With\n" +
			"--ca-certificate, devices whose certificate chains to the CA are admitted once the CA is verified:\n" +
			"prove possession of its key with 'verification-code' and 'verify', or vouch for it with --ca-verified.",
		Example: "  zerotouch enrollment group create line-a --symmetric-key --iot-hub hub-eu --desired '{\"interval\":30}'\n" +
			"  zerotouch enrollment group create maker-ca --ca-certificate maker-ca.pem\n" +
			"  zerotouch enrollment group create maker-ca --ca-certificate maker-ca.pem --ca-verified",
		Args: exactArgs(1),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			at, err := att.groupAttestation(cmd, true)
			if err != nil {
				return err
			}
			req.ID, req.Attestation = args[0], *at
			if req.EnrollmentPolicies, err = act.policies(cmd, disabled, reprovision); err != nil {
				return err
			}
			g, err := c.CreateEnrollmentGroup(ctx, req)
			if err != nil {
				return err
			}
			return o.print(cmd, g, func(w io.Writer) { groupFields(w, g) })
		}),
	}
	f := cmd.Flags()
	f.BoolVar(&disabled, "disabled", false, "create it disabled: its devices are refused until it is enabled")
	f.StringVar(&reprovision, "reprovision-policy", "", "never, reprovision-and-reset or reprovision-and-migrate (default)")
	att.register(f, true)
	act.register(f)
	return cmd
}

func newGroupListCmd(o *clientOptions) *cobra.Command {
	return listCmd(o, "List enrollment groups", (*apiclient.Client).ListEnrollmentGroups, func(w io.Writer, items []registry.EnrollmentGroup) {
		row(w, "GROUP ID", "STATUS", "ATTESTATION", "ALLOCATION", "IOT HUBS", "VERSION")
		for _, g := range items {
			row(w, g.ID, string(g.Status), string(g.Attestation.Type), allocationOf(&g.EnrollmentPolicies),
				orDash(strings.Join(g.IoTHubs, ",")), strconv.FormatInt(g.Version, 10))
		}
	})
}

func newGroupShowCmd(o *clientOptions) *cobra.Command {
	return showCmd(o, "show GROUP_ID", "Show an enrollment group (its keys only to operator and admin keys)",
		(*apiclient.Client).GetEnrollmentGroup, groupFields)
}

func newGroupUpdateCmd(o *clientOptions) *cobra.Command {
	var u updateFlags
	cmd := &cobra.Command{
		Use:   "update GROUP_ID [flags]",
		Short: "Change some fields of an enrollment group",
		Long: "Change the fields given by flags; the others stay as they are. An oem key may change only\n" +
			"--status and the activation settings. --symmetric-key alone replaces the group keys with\n" +
			"generated ones (every device key derived from the old ones stops working).\n" +
			"In update, --tags null, --desired null and --payload null remove them; --iot-hub '' empties the hub list.",
		Args: exactArgs(1),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			var req api.UpdateEnrollmentGroupRequest
			var err error
			if req.Attestation, err = u.att.groupAttestation(cmd, false); err != nil {
				return err
			}
			p, err := u.policies(cmd)
			if err != nil {
				return err
			}
			req.Status, req.ReprovisionPolicy, req.ActivationSettings, req.Version = p.status, p.reprovision, p.settings, p.version
			if req.Attestation == nil && req.Status == nil && req.ReprovisionPolicy == nil && !u.act.any(cmd) {
				return usageError(cmd, errors.New("nothing to change: give at least one flag"))
			}
			g, err := c.UpdateEnrollmentGroup(ctx, args[0], req)
			if err != nil {
				return err
			}
			return o.print(cmd, g, func(w io.Writer) { groupFields(w, g) })
		}),
	}
	u.register(cmd.Flags(), "group", true)
	return cmd
}

func newGroupStatusCmd(o *clientOptions, enable bool) *cobra.Command {
	cmd := statusCmd(o, enable, "group", (*apiclient.Client).SetEnrollmentGroupEnabled, groupFields)
	if !enable {
		cmd.Use = "disable GROUP_ID"
		cmd.Short = "Disable an enrollment group: its devices' registrations are refused"
		return cmd
	}
	cmd.Use = "enable GROUP_ID [flags]"
	cmd.Short = "Enable an enrollment group, with its initial twin, hubs and payload"
	return cmd
}

func newGroupDeriveKeyCmd(o *clientOptions) *cobra.Command {
	var regID string
	cmd := &cobra.Command{
		Use:   "derive-key GROUP_ID --registration-id ID",
		Short: "Print the key of one device of a symmetric-key group (asks the server; operator)",
		Long: "Print the key a device of a symmetric-key enrollment group signs its registrations with: the\n" +
			"value a factory burns into the device with its registration id. The registration id is\n" +
			"lower-cased; the device must register with the id printed. The request is audited.",
		Example: "  zerotouch enrollment group derive-key line-a --registration-id press-0042 -o json",
		Args:    exactArgs(1),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			if regID == "" {
				return usageError(cmd, errors.New("--registration-id is required"))
			}
			k, err := c.DeriveDeviceKey(ctx, args[0], regID)
			if err != nil {
				return err
			}
			return o.print(cmd, k, func(w io.Writer) { derivedKeyFields(w, k) })
		}),
	}
	cmd.Flags().StringVar(&regID, "registration-id", "", "the device's registration id (required)")
	return cmd
}

func newGroupVerificationCodeCmd(o *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "verification-code GROUP_ID",
		Short: "Get a code to prove possession of an X.509 group's CA key (operator)",
		Long: "Print a new proof-of-possession code for the CA certificate of an X.509 enrollment group, as\n" +
			"DPS does: sign a certificate whose subject common name is the code with the CA's private key,\n" +
			"and upload it with 'zerotouch enrollment group verify'. The group admits devices once its CA is\n" +
			"verified. A new code replaces the pending one.",
		Example: "  code=$(zerotouch enrollment group verification-code maker-ca -o json | jq -r .verificationCode)\n" +
			"  openssl req -new -key maker-ca.key -subj \"/CN=$code\" -out verify.csr\n" +
			"  openssl x509 -req -in verify.csr -CA maker-ca.pem -CAkey maker-ca.key -CAcreateserial -days 1 -out verify.pem\n" +
			"  zerotouch enrollment group verify maker-ca --certificate verify.pem",
		Args: exactArgs(1),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			v, err := c.EnrollmentGroupVerificationCode(ctx, args[0])
			if err != nil {
				return err
			}
			return o.print(cmd, v, func(w io.Writer) {
				fields(w,
					"Group ID", v.EnrollmentGroupID,
					"Verification code", v.VerificationCode,
					"CA subject", v.CASubject,
					"CA SHA-256", v.CAThumbprint,
					"CA verified", strconv.FormatBool(v.Verified))
			})
		}),
	}
}

func newGroupVerifyCmd(o *clientOptions) *cobra.Command {
	var certFile string
	cmd := &cobra.Command{
		Use:   "verify GROUP_ID --certificate FILE",
		Short: "Verify an X.509 group's CA by proof of possession (operator)",
		Long: "Upload the verification certificate: subject common name the code of 'verification-code', signed\n" +
			"by the group's CA private key. When it verifies, the CA is marked verified and the group admits\n" +
			"devices whose certificate chains to it.",
		Example: "  zerotouch enrollment group verify maker-ca --certificate verify.pem",
		Args:    exactArgs(1),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			if certFile == "" {
				return usageError(cmd, errors.New("--certificate is required: the verification certificate (PEM file)"))
			}
			b, err := readLimited(certFile, registry.MaxEnrollmentPEM)
			if err != nil {
				return fmt.Errorf("--certificate: %w", err)
			}
			g, err := c.VerifyEnrollmentGroupCA(ctx, args[0], string(b))
			if err != nil {
				return err
			}
			return o.print(cmd, g, func(w io.Writer) { groupFields(w, g) })
		}),
	}
	cmd.Flags().StringVar(&certFile, "certificate", "", "the verification certificate, PEM file (required)")
	return cmd
}

// Output.

func allocationOf(p *registry.EnrollmentPolicies) string {
	if p.AllocationPolicy == registry.AllocationDefault {
		return "default"
	}
	return string(p.AllocationPolicy)
}

func compactJSONText(raw json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return string(raw)
	}
	return b.String()
}

// keyFields are the table lines of a symmetric key attestation; keys the
// server left out (a key below operator) are said to be hidden.
func keyFields(t registry.AttestationType, k *registry.SymmetricKeyAttestation) []string {
	switch {
	case t != registry.AttestationSymmetricKey:
		return nil
	case k == nil:
		return []string{"Keys", "hidden (shown to operator and admin keys only)"}
	}
	return []string{"Primary key", k.PrimaryKey, "Secondary key", k.SecondaryKey}
}

func policyFields(p *registry.EnrollmentPolicies) []string {
	return []string{
		"Status", string(p.Status),
		"Allocation policy", allocationOf(p),
		"IoT hubs", strings.Join(p.IoTHubs, ", "),
		"Reprovision policy", string(p.ReprovisionPolicy),
		"Initial tags", compactJSONText(p.InitialTwin.Tags),
		"Initial desired", compactJSONText(p.InitialTwin.DesiredProperties),
		"Payload", compactJSONText(p.CustomPayload),
	}
}

func enrollmentFields(w io.Writer, e *registry.Enrollment) {
	kv := []string{
		"Registration ID", e.RegistrationID,
		"Device ID", e.DeviceID,
		"Attestation", string(e.Attestation.Type),
	}
	kv = append(kv, keyFields(e.Attestation.Type, e.Attestation.SymmetricKey)...)
	if x := e.Attestation.X509; x != nil {
		kv = append(kv, "Certificate SHA-256", x.Thumbprint)
	}
	if t := e.Attestation.TPM; t != nil {
		kv = append(kv, "TPM endorsement key", t.EndorsementKey, "TPM storage root key", t.StorageRootKey)
	}
	kv = append(kv, policyFields(&e.EnrollmentPolicies)...)
	kv = append(kv,
		"Version", strconv.FormatInt(e.Version, 10),
		"Created", fmtTime(e.CreatedAt),
		"Updated", fmtTime(e.UpdatedAt))
	fields(w, kv...)
}

func groupFields(w io.Writer, g *registry.EnrollmentGroup) {
	kv := []string{
		"Group ID", g.ID,
		"Attestation", string(g.Attestation.Type),
	}
	kv = append(kv, keyFields(g.Attestation.Type, g.Attestation.SymmetricKey)...)
	if x := g.Attestation.X509CA; x != nil {
		verified := "no: the group admits no device until the CA is verified (see verification-code)"
		if x.Verified {
			verified = "yes"
			if x.VerifiedAt != nil {
				verified += ", " + fmtTime(*x.VerifiedAt)
			}
		}
		kv = append(kv, "CA certificate", caSubject(x.CACertificatePEM), "CA verified", verified,
			"Verification code", x.VerificationCode)
	}
	kv = append(kv, policyFields(&g.EnrollmentPolicies)...)
	kv = append(kv,
		"Version", strconv.FormatInt(g.Version, 10),
		"Created", fmtTime(g.CreatedAt),
		"Updated", fmtTime(g.UpdatedAt))
	fields(w, kv...)
}

// caSubject describes a CA certificate by its subject and SHA-256.
func caSubject(pemText string) string {
	certs, err := parseChain([]byte(pemText))
	if err != nil || len(certs) == 0 {
		return "(does not parse)"
	}
	sum := sha256.Sum256(certs[0].Raw)
	return certs[0].Subject.String() + " (SHA-256 " + hex.EncodeToString(sum[:]) + ")"
}

func derivedKeyFields(w io.Writer, k *api.DerivedDeviceKey) {
	fields(w,
		"Registration ID", k.RegistrationID,
		"Device key", k.DeviceKey,
		"Secondary device key", k.SecondaryDeviceKey)
}
