// Package deploy holds pgfront's shipped operations artefacts: the Prometheus alert rules
// (prometheus/pgfront-alerts.yml) and the Grafana dashboard (grafana/pgfront-dashboard.json).
// It has no Go API; its tests check that every query in both files parses as PromQL and
// names only metric families, labels and label values that pgfront actually exports.
package deploy
