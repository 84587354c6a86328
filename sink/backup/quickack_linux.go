package backup

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// quickAck wraps a TCP connection so that every read first asks Linux to
// acknowledge at once (TCP_QUICKACK). Cyrus's imapd writes some responses
// in several segments without TCP_NODELAY, so that Nagle holds the last
// one until our ACK, which delayed acknowledgement holds for up to 40 ms
// (see fetch's quickAck, of which this is a copy, and BENCHMARKS.md).
func quickAck(c net.Conn) net.Conn {
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
