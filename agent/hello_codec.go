package main

// A hand-written codec for the handshake. A template clone's first work under software
// emulation is translated afresh in its own QEMU, block by block, and encoding/json (reflection,
// allocation, float formatting) was ~1,100 of the ~6,600 guest blocks between resume and the
// hello reply. The host sends one exact shape (JSON.stringify, fixed key order, no spaces):
//
//	{"op":"hello","versions":[2]}
//	{"op":"hello","versions":[2],"sync":{"wallClockMs":1733100000000,"entropy":"<base64>"}}
//
// parseHello accepts only that shape; anything else returns ok=false and goes through
// encoding/json as before, so no input is read differently. appendHelloResult writes what
// json.Marshal would write for the same value (bootMs with at most 3 decimals, microsecond
// resolution).

import (
	"strconv"
)

const (
	helloPrefix     = `{"op":"hello","versions":[`
	helloSyncPrefix = `,"sync":{"wallClockMs":`
	helloEntropyKey = `,"entropy":"`
	maxHelloVersion = 9
)

// parseHello recognises the canonical hello. ok=false means "not this exact shape", not "invalid".
func parseHello(b []byte) (versions []int, sync *syncRequest, ok bool) {
	rest, ok := cutPrefix(b, helloPrefix)
	if !ok {
		return nil, nil, false
	}
	for {
		// Single-digit versions only: the fast path need not know how JSON spells larger numbers.
		if len(rest) < 2 || rest[0] < '0' || rest[0] > '0'+maxHelloVersion {
			return nil, nil, false
		}
		versions = append(versions, int(rest[0]-'0'))
		sep := rest[1]
		rest = rest[2:]
		if sep == ']' {
			break
		}
		if sep != ',' {
			return nil, nil, false
		}
	}
	if string(rest) == "}" {
		return versions, nil, true
	}
	rest, ok = cutPrefix(rest, helloSyncPrefix)
	if !ok {
		return nil, nil, false
	}
	ms, rest, ok := cutInt(rest)
	if !ok {
		return nil, nil, false
	}
	rest, ok = cutPrefix(rest, helloEntropyKey)
	if !ok {
		return nil, nil, false
	}
	end := 0
	for end < len(rest) && isBase64Char(rest[end]) {
		end++
	}
	if string(rest[end:]) != `"}}` {
		return nil, nil, false
	}
	return versions, &syncRequest{WallClockMs: ms, Entropy: string(rest[:end])}, true
}

func cutPrefix(b []byte, prefix string) ([]byte, bool) {
	if len(b) < len(prefix) || string(b[:len(prefix)]) != prefix {
		return b, false
	}
	return b[len(prefix):], true
}

// cutInt reads a non-negative JSON integer (no sign, no leading zeros, at most 15 digits so it
// is exact as the float64 the host's Date.now() was).
func cutInt(b []byte) (int64, []byte, bool) {
	n := 0
	for n < len(b) && b[n] >= '0' && b[n] <= '9' {
		n++
	}
	if n == 0 || n > 15 || (n > 1 && b[0] == '0') {
		return 0, b, false
	}
	v, err := strconv.ParseInt(string(b[:n]), 10, 64)
	return v, b[n:], err == nil
}

func isBase64Char(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '='
}

// appendHelloResult encodes r as json.Marshal would. ok=false (a string that would need
// escaping) means: use json.Marshal.
func appendHelloResult(buf []byte, r helloResult) ([]byte, bool) {
	if !plainJSONString(r.Agent) || !plainJSONString(r.Transport) {
		return buf, false
	}
	buf = append(buf, `{"version":`...)
	buf = strconv.AppendInt(buf, int64(r.Version), 10)
	buf = append(buf, `,"agent":"`...)
	buf = append(buf, r.Agent...)
	buf = append(buf, `","pid":`...)
	buf = strconv.AppendInt(buf, int64(r.Pid), 10)
	buf = append(buf, `,"transport":"`...)
	buf = append(buf, r.Transport...)
	buf = append(buf, `","uid":`...)
	buf = strconv.AppendInt(buf, int64(r.UID), 10)
	buf = append(buf, `,"bootMs":`...)
	buf = appendMillis(buf, r.BootMs)
	if r.Sync != nil {
		buf = append(buf, `,"sync":{"reseeded":`...)
		buf = strconv.AppendBool(buf, r.Sync.Reseeded)
		buf = append(buf, `,"clockSet":`...)
		buf = strconv.AppendBool(buf, r.Sync.ClockSet)
		buf = append(buf, '}')
	}
	return append(buf, '}'), true
}

// appendMillis writes a non-negative millisecond count with microsecond resolution the way
// json.Marshal writes float64: no trailing zeros, no decimal point for whole numbers.
func appendMillis(buf []byte, ms float64) []byte {
	us := int64(ms*1000 + 0.5)
	if ms < 0 || us < 0 {
		us = 0
	}
	buf = strconv.AppendInt(buf, us/1000, 10)
	frac := us % 1000
	if frac == 0 {
		return buf
	}
	digits := []byte{byte('0' + frac/100), byte('0' + frac/10%10), byte('0' + frac%10)}
	for digits[len(digits)-1] == '0' {
		digits = digits[:len(digits)-1]
	}
	return append(append(buf, '.'), digits...)
}

// plainJSONString: printable ASCII that encoding/json writes verbatim (it escapes <, > and &).
func plainJSONString(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}
