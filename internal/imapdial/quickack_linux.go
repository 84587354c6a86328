package imapdial

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// QuickAck wraps a TCP connection so that every read first asks Linux to
// acknowledge at once (TCP_QUICKACK, which the kernel clears again on its
// own). Cyrus's imapd writes a FETCH response in several segments without
// TCP_NODELAY: Nagle holds its last segment until our ACK, which delayed
// acknowledgement holds for up to 40 ms. Measured against Cyrus 3.6.1:
// 40-60 ms per UID FETCH without, about 1 ms with.
func QuickAck(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	return &quickAckConn{Conn: c, raw: raw}
}

type quickAckConn struct {
	net.Conn
	raw syscall.RawConn
}

func (c *quickAckConn) Read(p []byte) (int, error) {
	_ = c.raw.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_QUICKACK, 1)
	})
	return c.Conn.Read(p)
}
