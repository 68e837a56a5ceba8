package main

// setns(2): not in package syscall for linux/arm64.
const sysSetns = 268
