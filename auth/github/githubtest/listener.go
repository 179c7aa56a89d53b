package githubtest

import (
	"fmt"
	"net"
	"sync"
)

// switchListener is a TCP listener that can stop listening, so that clients
// get "connection refused", and listen again on the same address.
type switchListener struct {
	addr net.Addr

	mu     sync.Mutex
	ln     net.Listener  // nil while refusing
	up     chan struct{} // closed while listening or closed
	closed bool
}

func newSwitchListener() (*switchListener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	up := make(chan struct{})
	close(up)
	return &switchListener{addr: ln.Addr(), ln: ln, up: up}, nil
}

func (l *switchListener) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		ln, up, closed := l.ln, l.up, l.closed
		l.mu.Unlock()
		if closed {
			return nil, net.ErrClosed
		}
		if ln == nil {
			<-up
			continue
		}
		c, err := ln.Accept()
		if err == nil {
			return c, nil
		}
		l.mu.Lock()
		refused := l.ln != ln && !l.closed // closed by refuse, not by Close
		l.mu.Unlock()
		if !refused {
			return nil, err
		}
	}
}

// refuse stops listening.
func (l *switchListener) refuse() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln == nil || l.closed {
		return
	}
	_ = l.ln.Close()
	l.ln = nil
	l.up = make(chan struct{})
}

// listen listens again on the same address.
func (l *switchListener) listen() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil || l.closed {
		return nil
	}
	ln, err := net.Listen("tcp", l.addr.String())
	if err != nil {
		return fmt.Errorf("listen again on %s: %w", l.addr, err)
	}
	l.ln = ln
	close(l.up)
	return nil
}

func (l *switchListener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if l.ln == nil {
		close(l.up)
		return nil
	}
	return l.ln.Close()
}

func (l *switchListener) Addr() net.Addr { return l.addr }
