package main

import "syscall"

const syscallNoFollow = syscall.O_NOFOLLOW

// prctl options missing from package syscall.
const (
	prSetChildSubreaper = 36
	prSetNoNewPrivs     = 38
	prCapAmbient        = 47
	prCapAmbientClear   = 4
)
