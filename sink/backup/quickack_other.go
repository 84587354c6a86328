//go:build !linux

package backup

import "net"

// quickAck is Linux only (TCP_QUICKACK).
func quickAck(c net.Conn) net.Conn { return c }
