// Package deploy holds pgfront's shipped operations artefacts: the Prometheus alert rules
// (prometheus/pgfront-alerts.yml), the Grafana dashboard (grafana/pgfront-dashboard.json),
// the systemd unit and the Kubernetes kustomize base (kubernetes/). It has no Go API; its
// tests check that every query in the rules and dashboard parses as PromQL and names only
// metric families, labels and label values that pgfront actually exports, and that every
// Kubernetes manifest decodes strictly into its API type and agrees with the pgfront config
// it carries.
package deploy
