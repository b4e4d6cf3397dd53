package est

import (
	"bytes"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"testing"
)

// FuzzDecodeRequest feeds DecodeRequest arbitrary bodies: it must never
// panic, and what it accepts must be exactly one DER SEQUENCE that comes
// back unchanged through the encoding the handler answers with. Run with
//
//	go test -run '^$' -fuzz '^FuzzDecodeRequest$' -fuzztime 30s ./internal/dialect/est/
func FuzzDecodeRequest(f *testing.F) {
	der := csrDER(f, newKey(f), "dev-1")
	b64 := base64.StdEncoding.EncodeToString(der)
	for _, seed := range [][]byte{
		der,
		[]byte(b64),
		[]byte(wrap(b64, 64, "\r\n")),
		[]byte(base64.RawStdEncoding.EncodeToString(der)),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
		der[:len(der)-1],
		append(bytes.Clone(der), 0),
		{0x30, 0x80, 0x00, 0x00}, // BER indefinite length
		{0x30, 0x84, 0xff, 0xff, 0xff, 0xff},
		[]byte("MA=="), // an empty SEQUENCE
		[]byte("===="),
		{},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := DecodeRequest(body)
		if err != nil {
			if got != nil {
				t.Fatal("an error and a result")
			}
			return
		}
		var seq asn1.RawValue
		if rest, err := asn1.Unmarshal(got, &seq); err != nil || len(rest) != 0 || seq.Tag != asn1.TagSequence {
			t.Fatalf("accepted % x, not one SEQUENCE", got)
		}
		again, err := DecodeRequest(encodeBase64Lines(got))
		if err != nil || !bytes.Equal(again, got) {
			t.Fatalf("base64 round trip: %v", err)
		}
	})
}
