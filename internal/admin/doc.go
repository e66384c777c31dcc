// Package admin owns pgfront's admin listener: the JSON API that lists routes, servers,
// sessions, sockets and alerts and acts on them (kill a session, set a server ready, drain
// or maint), the live stats page, and the Prometheus /metrics endpoint, all on one HTTP
// listener with bearer-token scopes (read and admin). What it serves comes from a Backend,
// which the composition root implements over the running proxy.
//
//	srv, err := admin.New(admin.Options{
//		Listen:     "127.0.0.1:9187",
//		AdminToken: token,
//		Backend:    backend,
//		Gatherer:   registry,
//		Logger:     logger,
//	})
//	if err != nil { ... }
//	if err := srv.Listen(); err != nil { ... }
//	srv.Serve()
//	defer srv.Close()
package admin
