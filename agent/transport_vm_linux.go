// OWNED BY THE VM BACKEND ENGINEER: replaced wholesale

package main

import "errors"

// openVMTransport opens the virtio-serial port "ctl" or AF_VSOCK port 1024. Placeholder: the
// VM backend engineer replaces this file.
func openVMTransport(name string) (Transport, error) {
	return nil, errors.New("virtio-serial/vsock transport not built")
}
