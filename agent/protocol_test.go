package main

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

const goldenDir = "../protocol/golden"

type goldenFrame struct {
	Type   uint8           `json:"type"`
	Stream uint32          `json:"stream"`
	JSON   json.RawMessage `json:"json"`
	Base64 *string         `json:"base64"`
}

func loadGolden(t testing.TB) map[string][]goldenFrame {
	b, err := os.ReadFile(filepath.Join(goldenDir, "frames.json"))
	if err != nil {
		t.Fatal(err)
	}
	var idx map[string][]goldenFrame
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	return idx
}

func TestGoldenFrames(t *testing.T) {
	idx := loadGolden(t)
	files, _ := filepath.Glob(filepath.Join(goldenDir, "*.bin"))
	if len(files) != len(idx) {
		t.Fatalf("%d .bin files but %d entries in frames.json", len(files), len(idx))
	}
	for name, want := range idx {
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(goldenDir, name))
			if err != nil {
				t.Fatal(err)
			}
			r := bytes.NewReader(raw)
			var reencoded []byte
			for i, w := range want {
				f, err := readFrame(r)
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if f.Type != w.Type || f.Stream != w.Stream {
					t.Fatalf("frame %d: type/stream %d/%d, want %d/%d", i, f.Type, f.Stream, w.Type, w.Stream)
				}
				checkPayload(t, i, f.Payload, w)
				enc, err := encodeFrame(f.Type, f.Stream, f.Payload)
				if err != nil {
					t.Fatal(err)
				}
				reencoded = append(reencoded, enc...)
			}
			if _, err := readFrame(r); err != io.EOF {
				t.Fatalf("trailing data after %d frames: %v", len(want), err)
			}
			if !bytes.Equal(reencoded, raw) {
				t.Fatal("re-encoding does not reproduce the golden bytes")
			}
		})
	}
}

func checkPayload(t *testing.T, i int, payload []byte, w goldenFrame) {
	t.Helper()
	if w.Base64 != nil {
		want, _ := base64.StdEncoding.DecodeString(*w.Base64)
		if !bytes.Equal(payload, want) {
			t.Fatalf("frame %d: payload %q, want %q", i, payload, want)
		}
		return
	}
	var got, want any
	if err := json.Unmarshal(payload, &got); err != nil {
		t.Fatalf("frame %d: payload is not JSON: %v", i, err)
	}
	_ = json.Unmarshal(w.JSON, &want)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("frame %d: %v, want %v", i, got, want)
	}
}

func header(n uint32, typ uint8, stream uint32) []byte {
	h := make([]byte, headerBytes)
	binary.BigEndian.PutUint32(h, n)
	h[4] = typ
	binary.BigEndian.PutUint32(h[5:], stream)
	return h
}

func TestReadFrameRejects(t *testing.T) {
	cases := []struct {
		name    string
		input   []byte
		wantErr error
	}{
		{"payload over 1 MiB", header(maxPayloadBytes+1, frameData, 1), errProtocol},
		{"length 4 GiB", header(0xffffffff, frameStdin, 1), errProtocol},
		{"JSON over 256 KiB", header(maxJSONBytes+1, frameRequest, 1), errProtocol},
		{"unknown type 0", header(0, 0, 1), errProtocol},
		{"unknown type 0x0d", header(0, 0x0d, 1), errProtocol},
		{"truncated header", []byte{0, 0, 0}, io.ErrUnexpectedEOF},
		{"truncated payload", append(header(5, frameData, 1), 'a'), io.ErrUnexpectedEOF},
		{"clean end", nil, io.EOF},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := readFrame(bytes.NewReader(c.input))
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("err = %v, want %v", err, c.wantErr)
			}
		})
	}
}

func TestEncodeFrameLimits(t *testing.T) {
	cases := []struct {
		typ   uint8
		size  int
		valid bool
	}{
		{frameData, maxPayloadBytes, true},
		{frameData, maxPayloadBytes + 1, false},
		{frameResult, maxJSONBytes, true},
		{frameResult, maxJSONBytes + 1, false},
	}
	for _, c := range cases {
		_, err := encodeFrame(c.typ, 1, make([]byte, c.size))
		if (err == nil) != c.valid {
			t.Errorf("type %d size %d: err = %v", c.typ, c.size, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(goldenDir, "*.bin"))
	for _, p := range files {
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	f.Add(header(maxPayloadBytes+1, frameData, 1))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for {
			fr, err := readFrame(r)
			if err != nil {
				return
			}
			if len(fr.Payload) > maxPayloadBytes || !knownType(fr.Type) {
				t.Fatalf("decoder accepted %d bytes of type %d", len(fr.Payload), fr.Type)
			}
			enc, err := encodeFrame(fr.Type, fr.Stream, fr.Payload)
			if err != nil {
				t.Fatalf("decoded frame does not re-encode: %v", err)
			}
			back, err := readFrame(bytes.NewReader(enc))
			if err != nil || !bytes.Equal(back.Payload, fr.Payload) {
				t.Fatalf("round trip failed: %v", err)
			}
		}
	})
}
