//go:build !linux

package imapdial

import "net"

// QuickAck is Linux only (TCP_QUICKACK): elsewhere it returns c.
func QuickAck(c net.Conn) net.Conn { return c }
