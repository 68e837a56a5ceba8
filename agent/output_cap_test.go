package main

import (
	"bytes"
	"strings"
	"testing"
)

// feed runs writes through a cap as a pump does and returns what was sent live, the tail and the
// dropped count.
func feed(maxBytes int64, writes ...string) (head, tail string, dropped int64) {
	oc := newOutputCap(maxBytes)
	var sent bytes.Buffer
	for _, w := range writes {
		p := []byte(w)
		if oc.live() {
			sent.Write(p[:oc.split(p)])
		} else {
			oc.keep(p)
		}
	}
	t, d := oc.finish()
	return sent.String(), string(t), d
}

func TestOutputCap(t *testing.T) {
	ja := strings.Repeat("日本語", 10) // 90 bytes, 3 per character
	cases := []struct {
		name       string
		max        int64
		writes     []string
		head, tail string
		dropped    int64
	}{
		{name: "under the cap: all of it, exactly", max: 10, writes: []string{"abc", "defg"}, head: "abcde", tail: "fg"},
		{name: "exactly the cap", max: 10, writes: []string{"abcdefghij"}, head: "abcde", tail: "fghij"},
		{name: "over: head and tail, middle dropped", max: 10, writes: []string{"abcdefgh", "ijklmnopqrst"}, head: "abcde", tail: "pqrst", dropped: 10},
		{name: "many small writes past the head", max: 4, writes: strings.Split("abcdefghijklmnopqrstuvwxyz", ""), head: "ab", tail: "yz", dropped: 22},
		{name: "zero cap drops everything", max: 0, writes: []string{"abc"}, dropped: 3},
		{name: "cap of one: all head", max: 1, writes: []string{"ab"}, head: "a", dropped: 1},
		// The 10-byte head ends inside the 4th character: cut back to 9. The last 10 bytes start
		// with the last byte of a character: it is dropped too.
		{name: "UTF-8 cut at character boundaries", max: 20, writes: []string{ja}, head: "日本語", tail: "日本語", dropped: 90 - 9 - 9},
		{name: "UTF-8 that fits is exact across the cut", max: 90, writes: []string{ja[:40], ja[40:]}, head: ja[:45], tail: ja[45:]},
		{name: "binary passes through", max: 8, writes: []string{"\x00\xff\xfe\x01", "\x02\x80"}, head: "\x00\xff\xfe\x01", tail: "\x02\x80"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			head, tail, dropped := feed(c.max, c.writes...)
			if head != c.head || tail != c.tail || dropped != c.dropped {
				t.Fatalf("head %q tail %q dropped %d; want %q %q %d", head, tail, dropped, c.head, c.tail, c.dropped)
			}
		})
	}
}

func TestOutputCapMemoryIsBounded(t *testing.T) {
	oc := newOutputCap(1 << 20)
	chunk := bytes.Repeat([]byte("x"), 32<<10)
	for i := 0; i < 200; i++ {
		if oc.live() {
			oc.split(chunk)
		} else {
			oc.keep(chunk)
		}
		if cap(oc.tail) > 4*maxTailBytes {
			t.Fatalf("tail buffer grew to %d bytes", cap(oc.tail))
		}
	}
	tail, dropped := oc.finish()
	if len(tail) != maxTailBytes || dropped != 200*(32<<10)-(1<<20) {
		t.Fatalf("tail %d dropped %d", len(tail), dropped)
	}
}

func TestUnfinishedRuneLen(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int
	}{
		{"", 0}, {"a", 0}, {"日", 0}, {"a\xe6", 1}, {"a\xe6\x97", 2}, {"\xf0\x9f\x98", 3}, {"\xf0\x9f\x98\x80", 0},
		{"\x97\xa5", 0}, // the lead byte went out earlier: nothing to take back
		{"\xff", 0},
	} {
		if got := unfinishedRuneLen([]byte(c.in)); got != c.want {
			t.Errorf("unfinishedRuneLen(%q) = %d, want %d", c.in, got, c.want)
		}
	}
}
