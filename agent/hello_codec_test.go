package main

import (
	"encoding/json"
	"reflect"
	"testing"
)

// The fast hello parser must read every input it accepts exactly as encoding/json does, and
// decline (not misread) everything else.
func TestParseHello(t *testing.T) {
	cases := []struct {
		in       string
		ok       bool
		versions []int
		sync     *syncRequest
	}{
		{`{"op":"hello","versions":[1]}`, true, []int{1}, nil},
		{`{"op":"hello","versions":[2,1]}`, true, []int{2, 1}, nil},
		{`{"op":"hello","versions":[1],"sync":{"wallClockMs":1733100000000,"entropy":"q83vEjRWeJA="}}`, true, []int{1}, &syncRequest{1733100000000, "q83vEjRWeJA="}},
		{`{"op":"hello","versions":[1],"sync":{"wallClockMs":0,"entropy":""}}`, true, []int{1}, &syncRequest{0, ""}},
		// Everything below is left to encoding/json.
		{`{"op":"hello", "versions":[1]}`, false, nil, nil},
		{`{"versions":[1],"op":"hello"}`, false, nil, nil},
		{`{"op":"hello","versions":[10]}`, false, nil, nil},
		{`{"op":"hello","versions":[]}`, false, nil, nil},
		{`{"op":"hello","versions":[1]} `, false, nil, nil},
		{`{"op":"hello","versions":[1],"extra":1}`, false, nil, nil},
		{`{"op":"hello","versions":[1],"sync":{"wallClockMs":-5,"entropy":""}}`, false, nil, nil},
		{`{"op":"hello","versions":[1],"sync":{"wallClockMs":01,"entropy":""}}`, false, nil, nil},
		{`{"op":"hello","versions":[1],"sync":{"wallClockMs":1.5,"entropy":""}}`, false, nil, nil},
		{`{"op":"hello","versions":[1],"sync":{"wallClockMs":1,"entropy":"a\"b"}}`, false, nil, nil},
		{`{"op":"hello","versions":[1],"sync":{"wallClockMs":1,"entropy":"\u0041"}}`, false, nil, nil},
		{`{"op":"hello","versions":[1],"sync":{"wallClockMs":1,"entropy":"AA=="}}x`, false, nil, nil},
		{`{"op":"ping"}`, false, nil, nil},
		{``, false, nil, nil},
	}
	for _, tc := range cases {
		versions, sync, ok := parseHello([]byte(tc.in))
		if ok != tc.ok {
			t.Errorf("%s: ok=%v, want %v", tc.in, ok, tc.ok)
			continue
		}
		if !ok {
			continue
		}
		if !reflect.DeepEqual(versions, tc.versions) || !reflect.DeepEqual(sync, tc.sync) {
			t.Errorf("%s: got %v %+v, want %v %+v", tc.in, versions, sync, tc.versions, tc.sync)
		}
		var head requestHead
		if err := json.Unmarshal([]byte(tc.in), &head); err != nil {
			t.Fatalf("%s: accepted by the fast path but not valid JSON: %v", tc.in, err)
		}
		if head.Op != "hello" || !reflect.DeepEqual(head.Versions, versions) || !reflect.DeepEqual(head.Sync, sync) {
			t.Errorf("%s: encoding/json reads %+v, the fast path %v %+v", tc.in, head, versions, sync)
		}
	}
}

func TestAppendHelloResultMatchesEncodingJSON(t *testing.T) {
	for _, bootMs := range []float64{0, 0.001, 0.01, 0.1, 0.5, 1, 12.345, 12.34, 12.3, 999.999, 1000, 123456.789} {
		for _, sync := range []*syncResult{nil, {Reseeded: true, ClockSet: true}, {Reseeded: false, ClockSet: true}} {
			r := helloResult{Version: 1, Agent: agentVersion, Pid: 1, Transport: "virtio-serial", UID: 0, BootMs: bootMs, Sync: sync}
			got, ok := appendHelloResult(nil, r)
			want, _ := json.Marshal(r)
			if !ok || string(got) != string(want) {
				t.Errorf("bootMs %v sync %+v:\n got %s\nwant %s", bootMs, sync, got, want)
			}
		}
	}
	// Strings encoding/json would escape are left to it.
	for _, s := range []string{`a"b`, `a\b`, "a\nb", "<x>", "a&b", "é"} {
		if _, ok := appendHelloResult(nil, helloResult{Agent: agentVersion, Transport: s}); ok {
			t.Errorf("transport %q: the fast encoder should decline", s)
		}
	}
}

func FuzzParseHello(f *testing.F) {
	f.Add([]byte(`{"op":"hello","versions":[1],"sync":{"wallClockMs":1733100000000,"entropy":"q83vEjRWeJA="}}`))
	f.Add([]byte(`{"op":"hello","versions":[1,2]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		versions, sync, ok := parseHello(b)
		if !ok {
			return
		}
		var head requestHead
		if err := json.Unmarshal(b, &head); err != nil {
			t.Fatalf("%q: accepted by the fast path but encoding/json says %v", b, err)
		}
		if head.Op != "hello" || !reflect.DeepEqual(head.Versions, versions) || !reflect.DeepEqual(head.Sync, sync) {
			t.Fatalf("%q: encoding/json reads %+v, the fast path %v %+v", b, head, versions, sync)
		}
	})
}
