// Package handover owns the hand-over of listening TCP sockets from a running pgfront process
// to its successor on the same host (same config file, same user), so that an upgrade or a
// restart refuses no connection and loses no SYN: the old and the new process share the very
// same kernel sockets, and the old one stops accepting only after the new one accepts.
//
// The old process serves a unix socket (SOCK_SEQPACKET, mode 0600, at DefaultPath); the new
// one connects, receives duplicates of the listening sockets with SCM_RIGHTS, claims the ones
// its config still has, starts accepting on them and says it is ready. The old process then
// stops serving the unix socket and calls its handedOver callback, in which it closes its
// copies of the listeners and drains. Connections queued in a listener's backlog stay queued:
// the socket is never closed while either process holds it.
//
// Old process:
//
//	path, err := handover.DefaultPath(configFile)
//	srv, err := handover.Serve(path, func() []handover.Listener {
//		return app.OpenListeners() // whatever is still accepting; may be empty
//	}, func() {
//		app.CloseListeners() // close(2) only, never shutdown(2): the new process shares them
//		app.Drain()
//	}, logger)
//	defer srv.Close()
//
// New process:
//
//	t, err := handover.Take(ctx, path)
//	if errors.Is(err, handover.ErrNoPeer) { /* first start: bind fresh */ }
//	defer t.Abort() // no-op after Ready
//	ln, ok := t.Claim(handover.KindRoute, "rw", "0.0.0.0:5000")
//	if !ok { ln, err = bindFresh("0.0.0.0:5000") }
//	startAccepting(ln)
//	if err := t.Ready(); err != nil { log(err) } // keep serving either way
//	srv, err := handover.Serve(path, ...) // now the path is free for the next generation
//
// # Protocol (version 1)
//
// Every message is one SOCK_SEQPACKET packet holding one JSON object of at most 64 KiB with
// "proto":"pgfront-handover" and "version":1; a peer speaking another version gets a
// "refuse" message naming ours and the error wraps ErrVersion on both sides.
//
//	taker -> server  {"type":"take"}
//	server -> taker  {"type":"offer","listeners":[{kind,name,config}...]} + SCM_RIGHTS, one fd per listener, in order
//	                 or {"type":"refuse","error":"..."}
//	taker -> server  {"type":"ready"}      (or the taker hangs up: nothing changes)
//	server -> taker  {"type":"ack"}        sent after the server stopped serving its socket
//
// Both ends check with SO_PEERCRED that the peer runs as the same uid (or root). Every read
// and write has a deadline; the server waits at most 30s for "ready". Received descriptors
// that are not listening TCP sockets are closed and make Take fail.
//
// Linux only: SO_PEERCRED, SOCK_SEQPACKET unix sockets and /proc are Linux interfaces.
package handover
