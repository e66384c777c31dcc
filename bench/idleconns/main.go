// Command idleconns holds many idle PostgreSQL sessions open through a proxy,
// so the proxy's memory per idle session can be measured without thousands of
// real PostgreSQL backends. bench/pgbench.sh drives it.
//
//	idleconns server  -listen 127.0.0.1:16500
//	idleconns clients -addr 127.0.0.1:16501 -n 10000
//
// Neither side sends TCP keepalive probes of its own.
//
// server is a scripted PostgreSQL peer: it answers each StartupMessage with
// AuthenticationOk, ParameterStatus, BackendKeyData and ReadyForQuery('I'),
// then holds the connection idle until the peer sends Terminate or goes away.
// SSLRequest and GSSENCRequest are refused with 'N', as a server without TLS
// does.
//
// clients opens n connections to a proxy, completes the startup on each
// (reads until ReadyForQuery), prints "ready N" on stdout and holds them
// until SIGINT/SIGTERM (or stdin closes, with -stdin). It then sends
// Terminate on each and exits. Any failed session is an error: the run exits
// non-zero without printing "ready".
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

const usage = `usage:
  idleconns server  -listen HOST:PORT
  idleconns clients -addr HOST:PORT -n N [-parallel P] [-timeout D] [-stdin]
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "server":
		err = serverCmd(os.Args[2:])
	case "clients":
		err = clientsCmd(os.Args[2:])
	default:
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "idleconns %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// stopSignal returns a context that ends on SIGINT or SIGTERM and, when
// watchStdin is set, when stdin reaches EOF.
func stopSignal(watchStdin bool) (context.Context, context.CancelFunc) {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	if watchStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			cancel()
		}()
	}
	return ctx, cancel
}

func serverCmd(args []string) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// No keepalive of its own (Go's default is 15s): the proxy's probes are all a
	// measurement of them sees (bench/keepalive.sh).
	ln, err := (&net.ListenConfig{KeepAlive: -1}).Listen(context.Background(), "tcp", *listen)
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	ctx, cancel := stopSignal(false)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	fmt.Printf("listening %s\n", ln.Addr())

	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		all = map[net.Conn]struct{}{}
		key atomic.Uint32
	)
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				break
			}
			// EMFILE and friends: say so and keep serving the sessions held.
			fmt.Fprintf(os.Stderr, "accept: %v\n", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		mu.Lock()
		all[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveScripted(c, key.Add(1))
			mu.Lock()
			delete(all, c)
			mu.Unlock()
		}()
	}
	mu.Lock()
	for c := range all {
		c.Close()
	}
	mu.Unlock()
	wg.Wait()
	return nil
}

// serveScripted plays a PostgreSQL server that accepts any login and never
// gets a query it must answer. It owns c and closes it.
func serveScripted(c net.Conn, key uint32) {
	defer c.Close()
	be := pgproto3.NewBackend(c, c)
	if !readStartup(be, c) {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	be.Send(&pgproto3.AuthenticationOk{})
	be.Send(&pgproto3.ParameterStatus{Name: "server_version", Value: "15.0"})
	be.Send(&pgproto3.BackendKeyData{ProcessID: key, SecretKey: binary.BigEndian.AppendUint32(nil, key^0x5eed)})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if err := be.Flush(); err != nil {
		return
	}
	for {
		msg, err := be.Receive()
		if err != nil {
			return
		}
		switch msg.(type) {
		case *pgproto3.Terminate:
			return
		case *pgproto3.Query:
			// Not used by the benchmark; answer so a stray psql does not hang.
			be.Send(&pgproto3.EmptyQueryResponse{})
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			if err := be.Flush(); err != nil {
				return
			}
		}
	}
}

// readStartup reads first packets until a StartupMessage, refusing TLS and
// GSS encryption on the way. It reports false when the session should end.
func readStartup(be *pgproto3.Backend, c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		msg, err := be.ReceiveStartupMessage()
		if err != nil {
			return false
		}
		switch msg.(type) {
		case *pgproto3.StartupMessage:
			return true
		case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
			if _, err := c.Write([]byte{'N'}); err != nil {
				return false
			}
		default: // CancelRequest: nothing runs here, so nothing to cancel.
			return false
		}
	}
}

func clientsCmd(args []string) error {
	fs := flag.NewFlagSet("clients", flag.ContinueOnError)
	addr := fs.String("addr", "", "proxy address HOST:PORT")
	n := fs.Int("n", 1000, "number of sessions to hold")
	parallel := fs.Int("parallel", 64, "sessions started at once")
	timeout := fs.Duration("timeout", 30*time.Second, "bound on each session's connect and startup")
	watchStdin := fs.Bool("stdin", false, "also stop when stdin closes")
	user := fs.String("user", "bench", "user in the StartupMessage")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" || *n < 1 || *parallel < 1 {
		return errors.New("need -addr, -n >= 1 and -parallel >= 1")
	}
	ctx, cancel := stopSignal(*watchStdin)
	defer cancel()

	conns := make([]net.Conn, *n)
	errs := make(chan error, 1)
	sem := make(chan struct{}, *parallel)
	var wg sync.WaitGroup
	for i := range conns {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c, err := startSession(*addr, *user, *timeout)
			if err != nil {
				select {
				case errs <- fmt.Errorf("session %d: %w", i, err):
				default:
				}
				cancel()
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	defer closeAll(conns)
	select {
	case err := <-errs:
		return err
	default:
	}
	if ctx.Err() != nil {
		return errors.New("interrupted before all sessions were ready")
	}

	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "ready %d\n", *n)
	if err := out.Flush(); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// startSession connects and logs in, returning the idle connection once the
// server said ReadyForQuery. The caller owns the returned conn.
func startSession(addr, user string, timeout time.Duration) (_ net.Conn, retErr error) {
	c, err := (&net.Dialer{Timeout: timeout, KeepAlive: -1}).Dial("tcp", addr) // no keepalive: see serverCmd
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", addr, err)
	}
	defer func() {
		if retErr != nil {
			c.Close()
		}
	}()
	_ = c.SetDeadline(time.Now().Add(timeout))
	fe := pgproto3.NewFrontend(c, c)
	fe.Send(&pgproto3.StartupMessage{
		ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters:      map[string]string{"user": user, "database": user, "application_name": "idleconns"},
	})
	if err := fe.Flush(); err != nil {
		return nil, fmt.Errorf("sending startup: %w", err)
	}
	for {
		msg, err := fe.Receive()
		if err != nil {
			return nil, fmt.Errorf("reading startup reply: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.ReadyForQuery:
			_ = c.SetDeadline(time.Time{})
			return c, nil
		case *pgproto3.ErrorResponse:
			return nil, fmt.Errorf("server refused: %s %s", m.Code, m.Message)
		}
	}
}

// closeAll says goodbye on every held session, so neither proxy logs an abort.
func closeAll(conns []net.Conn) {
	terminate, _ := (&pgproto3.Terminate{}).Encode(nil)
	for _, c := range conns {
		if c == nil {
			continue
		}
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.Write(terminate)
		c.Close()
	}
}
