package handover

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestDecodeMessage(t *testing.T) {
	const head = `"proto":"pgfront-handover","version":1`
	ok := []struct {
		in   string
		want message
	}{
		{`{` + head + `,"type":"take","pid":7}`, message{Proto: protoName, Version: 1, Type: msgTake, PID: 7}},
		{`{` + head + `,"type":"offer","listeners":[]}`, message{Proto: protoName, Version: 1, Type: msgOffer}},
		{`{` + head + `,"type":"offer","listeners":[{"kind":"route","name":"rw","config":"0.0.0.0:5000"},{"kind":"admin","config":"127.0.0.1:0"}]}`,
			message{Proto: protoName, Version: 1, Type: msgOffer, Listeners: []description{
				{Kind: KindRoute, Name: "rw", Config: "0.0.0.0:5000"}, {Kind: KindAdmin, Config: "127.0.0.1:0"}}}},
		{`{` + head + `,"type":"refuse","error":"no"}` + "\n", message{Proto: protoName, Version: 1, Type: msgRefuse, Error: "no"}},
	}
	for _, c := range ok {
		got, err := decodeMessage([]byte(c.in))
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("decodeMessage(%s) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}

	bad := []struct {
		in, want string
	}{
		{`{"proto":"pgfront-handover","version":2,"type":"take","new":1}`, "the peer speaks version 2, this process speaks version 1"},
		{`{"proto":"pgfront-handover","type":"take"}`, "the peer speaks version 0"},
		{`{"proto":"other","version":1,"type":"take"}`, `protocol "other"`},
		{`{` + head + `,"type":"take","extra":1}`, "unknown field"},
		{`{` + head + `,"type":"take"} {}`, "invalid character"},
		{`{` + head + `,"type":"steal"}`, `unknown type "steal"`},
		{`{` + head + `,"type":"take","listeners":[{"kind":"route","config":"x:1"}]}`, "take message: it carries listeners"},
		{`{` + head + `,"type":"ready","error":"x"}`, "ready message: it carries an error"},
		{`{` + head + `,"type":"offer","listeners":[{"kind":"tls","config":"x:1"}]}`, `listener 0: unknown kind "tls"`},
		{`{` + head + `,"type":"offer","listeners":[{"kind":"admin","name":"a","config":"x:1"}]}`, `admin listener named "a"`},
		{`{` + head + `,"type":"offer","listeners":[{"kind":"route","name":"a"}]}`, "no configured address"},
		{`{` + head + `,"type":"offer","listeners":[` + strings.Repeat(`{"kind":"admin","config":"x:1"},`, MaxListeners) + `{"kind":"admin","config":"x:1"}]}`, "254 listeners, over the limit of 253"},
		{`{` + head + `,"type":"refuse","error":"` + strings.Repeat("x", maxMessage) + `"}`, "over the 65536 byte limit"},
		{`[]`, "cannot unmarshal"},
		{``, "unexpected end"},
	}
	for _, c := range bad {
		_, err := decodeMessage([]byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("decodeMessage(%.80s) = %v, want an error containing %q", c.in, err, c.want)
		}
	}
	if _, err := decodeMessage([]byte(bad[0].in)); !errors.Is(err, ErrVersion) {
		t.Errorf("version mismatch: %v, want ErrVersion", err)
	}
}

func TestEncodeMessageRefusesWhatDecodeRefuses(t *testing.T) {
	m := newMessage(msgOffer)
	m.Listeners = []description{{Kind: "tls", Config: "x:1"}}
	if _, err := encodeMessage(m); err == nil {
		t.Error("encoded an unknown kind")
	}
	m = newMessage(msgRefuse)
	m.Error = strings.Repeat("x", maxMessage)
	if _, err := encodeMessage(m); err == nil || !strings.Contains(err.Error(), "over the 65536 byte limit") {
		t.Errorf("oversized: %v", err)
	}
}

// FuzzDecodeMessage: the decoder of the peer's bytes never panics, and what it accepts
// encodes and decodes to itself.
func FuzzDecodeMessage(f *testing.F) {
	const head = `"proto":"pgfront-handover","version":1`
	for _, s := range []string{
		`{` + head + `,"type":"take","pid":7}`,
		`{` + head + `,"type":"offer","listeners":[{"kind":"route","name":"rw","config":"0.0.0.0:5000"},{"kind":"admin","config":"127.0.0.1:0"}]}`,
		`{` + head + `,"type":"refuse","error":"no"}`,
		`{` + head + `,"type":"ready"}`,
		`{` + head + `,"type":"ack"}`,
		`{"proto":"pgfront-handover","version":2,"type":"take"}`,
		`{` + head + `,"type":"offer","listeners":[{"kind":"admin","name":"x","config":""}]}`,
		`{` + head + `,"type":"take"} trailing`,
		`{"PROTO":"pgfront-handover","Version":1,"TYPE":"ack","pid":-1}`,
		"{\"proto\":\"pgfront-handover\",\"version\":1,\"type\":\"refuse\",\"error\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			return
		}
		enc, err := encodeMessage(m)
		if err != nil {
			t.Fatalf("decoded %+v from %q but cannot encode it: %v", m, b, err)
		}
		again, err := decodeMessage(enc)
		if err != nil {
			t.Fatalf("cannot decode %s, encoded from %+v: %v", enc, m, err)
		}
		if !reflect.DeepEqual(m, again) {
			t.Fatalf("round trip changed %+v to %+v", m, again)
		}
	})
}
