package main

// setns(2): not in package syscall for linux/amd64.
const sysSetns = 308
