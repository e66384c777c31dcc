package admin

import (
	"strings"
	"testing"
)

func FuzzDecodeStateRequest(f *testing.F) {
	for _, s := range []string{`{"state":"drain"}`, `{}`, `{"state":""}`, `{"state":"x","y":1}`,
		`{"state":"ready"} `, `{"state":"ready"}{}`, `[`, "", `{"state":"\u0000"}`, `null`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		req, err := decodeStateRequest(strings.NewReader(body))
		if err == nil && req.State == "" {
			t.Fatalf("accepted %q with an empty state", body)
		}
	})
}

func FuzzBearerToken(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer abc", "Bearer", "Bearer ", "Basic abc", "", "Bearer  a b "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		token, ok := bearerToken(header)
		if ok && (token == "" || strings.TrimSpace(token) != token) {
			t.Fatalf("%q gave token %q", header, token)
		}
		if !ok && token != "" {
			t.Fatalf("%q: not ok but token %q", header, token)
		}
	})
}
