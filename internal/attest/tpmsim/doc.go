// Package tpmsim is a software TPM 2.0 device for tests of DPS TPM
// attestation: the Microsoft reference TPM that go-tpm-tools/simulator
// builds with cgo, set up and driven as the Azure IoT C SDK's
// hsm_client_tpm.c drives a real one. It is built only with the tag
// tpmsim (go test -tags tpmsim), so that other builds need no cgo.
package tpmsim
