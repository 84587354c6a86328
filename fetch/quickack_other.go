//go:build !linux

package fetch

import "net"

func quickAck(c net.Conn) net.Conn { return c }
