// Package attest verifies the evidence a device brings to prove who it is,
// one file per mechanism: sas.go holds the Azure IoT Hub Device
// Provisioning Service (DPS) shared access signature of symmetric-key
// attestation, and the derivation of a device key from an enrollment
// group's key.
//
// Everything here is pure computation on its inputs (no store, no network):
// the provisioning pipeline finds the enrollment and its keys, attest says
// whether the evidence matches them. Evidence is untrusted input: parsers
// are strict, bounded, and answer with typed errors (ErrMalformed,
// ErrWrongResource, ErrBadSignature, ErrExpired) that a dialect maps onto
// its own error answers.
package attest
