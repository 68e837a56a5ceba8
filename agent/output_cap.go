package main

// The per-stream output cap (docs/protocol.md, exec maxOutputBytes). Each of stdout and stderr
// gets the whole cap: a flood on stdout cannot starve the traceback on stderr. A stream over its
// cap keeps its head (streamed as produced) and its tail (sent after the process exits), and drops
// the middle: the last error message survives however long the output before it.

import "unicode/utf8"

// maxTailBytes bounds the tail a stream keeps; a smaller cap keeps half of itself as tail.
const maxTailBytes = 64 << 10

type outputCap struct {
	headLeft int64  // bytes that may still stream as produced
	tailCap  int    // how many of the last bytes are kept once the head is used up
	tail     []byte // the last bytes past the head (up to 2*tailCap before compaction)
	beyond   int64  // every byte past the head, kept or not
}

func newOutputCap(maxBytes int64) *outputCap {
	tail := maxBytes / 2
	if tail > maxTailBytes {
		tail = maxTailBytes
	}
	return &outputCap{headLeft: maxBytes - tail, tailCap: int(tail)}
}

// live reports whether output still streams as it is produced.
func (o *outputCap) live() bool { return o.headLeft > 0 }

// split takes bytes just read while live and returns how many of them to send now; the rest is
// kept for the tail. Where the head runs out inside p, the cut moves back to the start of an
// unfinished UTF-8 character, so that UTF-8 output is never cut inside a character.
func (o *outputCap) split(p []byte) int {
	if int64(len(p)) < o.headLeft {
		o.headLeft -= int64(len(p))
		return len(p)
	}
	cut := int(o.headLeft)
	cut -= unfinishedRuneLen(p[:cut])
	o.headLeft = 0
	o.keep(p[cut:])
	return cut
}

// keep holds bytes past the head; only the last tailCap of them can be sent.
func (o *outputCap) keep(p []byte) {
	o.beyond += int64(len(p))
	if o.tailCap == 0 {
		return
	}
	o.tail = append(o.tail, p...)
	if len(o.tail) > 2*o.tailCap {
		n := copy(o.tail, o.tail[len(o.tail)-o.tailCap:])
		o.tail = o.tail[:n]
	}
}

// finish returns what is left to send once the process is done and how many bytes were dropped:
// everything past the head when it fits the tail, else its last bytes, from a character start.
func (o *outputCap) finish() (tail []byte, dropped int64) {
	if o.beyond <= int64(o.tailCap) {
		return o.tail, 0
	}
	t := o.tail[len(o.tail)-o.tailCap:]
	skip := 0
	for skip < len(t) && skip < utf8.UTFMax-1 && !utf8.RuneStart(t[skip]) {
		skip++
	}
	return t[skip:], o.beyond - int64(len(t)) + int64(skip)
}

// unfinishedRuneLen is the length of a UTF-8 sequence that b ends in the middle of (0 if none, or
// if b does not hold the sequence's first byte).
func unfinishedRuneLen(b []byte) int {
	for back := 1; back <= utf8.UTFMax-1 && back <= len(b); back++ {
		c := b[len(b)-back]
		if !utf8.RuneStart(c) {
			continue // a continuation byte: look further back for its lead
		}
		if c < utf8.RuneSelf || utf8.FullRune(b[len(b)-back:]) {
			return 0
		}
		return back
	}
	return 0
}
