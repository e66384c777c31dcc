package admin

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"net/http"
)

// static holds the stats page: one HTML file, one script, one style sheet, nothing fetched
// from elsewhere.
//
//go:embed static/index.html static/app.js static/style.css
var static embed.FS

// asset is one embedded file with what the response needs.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

var (
	pageIndex  = mustAsset("static/index.html", "text/html; charset=utf-8")
	pageScript = mustAsset("static/app.js", "text/javascript; charset=utf-8")
	pageStyle  = mustAsset("static/style.css", "text/css; charset=utf-8")
)

func mustAsset(name, contentType string) asset {
	body, err := static.ReadFile(name)
	if err != nil {
		panic("admin: embedded " + name + " missing: " + err.Error())
	}
	sum := sha256.Sum256(body)
	return asset{body: body, contentType: contentType, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
}

// pagePolicy keeps the page to its own origin: no inline script, no other host, no framing.
const pagePolicy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// serveAsset serves a; browsers revalidate every load (no-cache) and get 304 while the
// binary is the same.
func serveAsset(a asset) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", a.contentType)
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", a.etag)
		h.Set("Content-Security-Policy", pagePolicy)
		h.Set("Referrer-Policy", "no-referrer")
		if match := r.Header.Get("If-None-Match"); match == a.etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Write(a.body)
	}
}
