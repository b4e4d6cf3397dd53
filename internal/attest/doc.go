// Package attest verifies the evidence a device brings to prove who it is,
// one file per mechanism: sas.go holds the Azure IoT Hub Device
// Provisioning Service (DPS) shared access signature of symmetric-key
// attestation, and the derivation of a device key from an enrollment
// group's key; x509.go the checks of X.509 attestation (the TLS client
// certificate against an individual enrollment's thumbprint or a group's
// CA) and of the proof of possession of a group's CA key; tpm.go the
// TPM 2.0 endorsement and storage root keys and the activation blob DPS
// answers a TPM's first registration with.
//
// Everything here is pure computation on its inputs (no store, no network):
// the provisioning pipeline finds the enrollment and its keys, attest says
// whether the evidence matches them. Evidence is untrusted input: parsers
// are strict, bounded, and answer with typed errors (ErrMalformed,
// ErrWrongResource, ErrBadSignature, ErrExpired; ErrCommonNameMismatch,
// ErrNotChained… for X.509) that a dialect maps onto its own error answers.
package attest
