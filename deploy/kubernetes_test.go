package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/pgfront/pgfront/internal/config"
)

// kustomizeDir is the kustomize base, relative to this package.
const kustomizeDir = "kubernetes"

// ---------------------------------------------------------------------------------------
// Rendering: the subset of kustomize the base uses (resources, configMapGenerator,
// generatorOptions.disableNameSuffixHash), read strictly so that a kustomization using
// anything else fails here instead of being rendered wrong. Where kubectl is installed,
// TestKubernetesRenderMatchesKubectl checks this renderer against kubectl's own kustomize.

// kustomization is what the base's kustomization.yaml may say.
type kustomization struct {
	APIVersion         string   `json:"apiVersion"`
	Kind               string   `json:"kind"`
	Resources          []string `json:"resources"`
	ConfigMapGenerator []struct {
		Name  string   `json:"name"`
		Files []string `json:"files"`
	} `json:"configMapGenerator"`
	GeneratorOptions struct {
		DisableNameSuffixHash bool `json:"disableNameSuffixHash"`
	} `json:"generatorOptions"`
}

// manifest is one rendered Kubernetes object.
type manifest struct {
	source     string // where it comes from: "deployment.yaml#1", "configMapGenerator pgfront"
	kind, name string
	json       []byte // the object as JSON
}

// strictJSON converts YAML to JSON (duplicate keys rejected) and decodes it into v the way
// the API server does with fieldValidation=Strict: field names match case-sensitively, and
// unknown and duplicate fields are errors.
func strictJSON(data []byte, v any) ([]byte, error) {
	js, err := sigsyaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, err
	}
	strict, err := sigsjson.UnmarshalStrict(js, v)
	if err != nil {
		return nil, err
	}
	if len(strict) > 0 {
		return nil, errors.Join(strict...)
	}
	return js, nil
}

// render builds the kustomization at the root of fsys.
func render(fsys fs.FS) ([]manifest, []string) {
	var problems []string
	report := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	raw, err := fs.ReadFile(fsys, "kustomization.yaml")
	if err != nil {
		return nil, []string{fmt.Sprintf("reading the kustomization: %v", err)}
	}
	var k kustomization
	if _, err := strictJSON(raw, &k); err != nil {
		return nil, []string{fmt.Sprintf("kustomization.yaml: %v (this test renders resources, configMapGenerator and generatorOptions only)", err)}
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		report("kustomization.yaml: apiVersion %q kind %q, want kustomize.config.k8s.io/v1beta1 Kustomization", k.APIVersion, k.Kind)
	}
	var out []manifest
	for _, res := range k.Resources {
		data, err := fs.ReadFile(fsys, res)
		if err != nil {
			report("kustomization.yaml: resource %s: %v", res, err)
			continue
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for i := 1; ; i++ {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				report("%s: reading document %d: %v", res, i, err)
				break
			}
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			js, err := sigsyaml.YAMLToJSONStrict(doc)
			if err != nil {
				report("%s#%d: %v", res, i, err)
				continue
			}
			var meta struct {
				Kind     string `json:"kind"`
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if err := sigsjson.UnmarshalCaseSensitivePreserveInts(js, &meta); err != nil {
				report("%s#%d: %v", res, i, err)
				continue
			}
			out = append(out, manifest{source: fmt.Sprintf("%s#%d", res, i), kind: meta.Kind, name: meta.Metadata.Name, json: js})
		}
	}
	if len(k.ConfigMapGenerator) > 0 && !k.GeneratorOptions.DisableNameSuffixHash {
		report("kustomization.yaml: generatorOptions.disableNameSuffixHash must be true: the pods reload the ConfigMap in place under its stable name")
	}
	for _, g := range k.ConfigMapGenerator {
		data := map[string]string{}
		for _, f := range g.Files {
			key, file, ok := strings.Cut(f, "=")
			if !ok {
				key, file = path.Base(f), f
			}
			b, err := fs.ReadFile(fsys, file)
			if err != nil {
				report("kustomization.yaml: configMapGenerator %s: %v", g.Name, err)
				continue
			}
			data[key] = string(b)
		}
		cm := corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"}, ObjectMeta: metav1.ObjectMeta{Name: g.Name}, Data: data}
		js, err := sigsyaml.Marshal(cm)
		if err == nil {
			js, err = sigsyaml.YAMLToJSON(js)
		}
		if err != nil {
			report("configMapGenerator %s: %v", g.Name, err)
			continue
		}
		out = append(out, manifest{source: "configMapGenerator " + g.Name, kind: "ConfigMap", name: g.Name, json: js})
	}
	return out, problems
}

// stripComments drops whole-line YAML comments, to tell an empty document from a real one.
func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for line := range bytes.Lines(doc) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			b.Write(line)
		}
	}
	return b.Bytes()
}

// ---------------------------------------------------------------------------------------
// Decoding: every manifest strictly into its API type.

type base struct {
	deployments []*appsv1.Deployment
	services    []*corev1.Service
	configMaps  []*corev1.ConfigMap
	secrets     []*corev1.Secret
	pdbs        []*policyv1.PodDisruptionBudget
	monitors    []*monitoringv1.ServiceMonitor
}

// apiVersions are the kinds the base may hold, with their API versions.
var apiVersions = map[string]string{
	"Deployment":          "apps/v1",
	"Service":             "v1",
	"ConfigMap":           "v1",
	"Secret":              "v1",
	"PodDisruptionBudget": "policy/v1",
	"ServiceMonitor":      "monitoring.coreos.com/v1",
}

func decode(ms []manifest) (*base, []string) {
	var problems []string
	b := &base{}
	seen := map[string]string{}
	for _, m := range ms {
		var tm metav1.TypeMeta
		if err := sigsjson.UnmarshalCaseSensitivePreserveInts(m.json, &tm); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", m.source, err))
			continue
		}
		want, ok := apiVersions[tm.Kind]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: kind %q is not one this test knows", m.source, tm.Kind))
			continue
		}
		if tm.APIVersion != want {
			problems = append(problems, fmt.Sprintf("%s: %s has apiVersion %q, want %q", m.source, tm.Kind, tm.APIVersion, want))
		}
		if m.name == "" {
			problems = append(problems, fmt.Sprintf("%s: %s has no metadata.name", m.source, tm.Kind))
		}
		id := tm.Kind + "/" + m.name
		if first, dup := seen[id]; dup {
			problems = append(problems, fmt.Sprintf("%s: %s defined twice (first in %s)", m.source, id, first))
		}
		seen[id] = m.source
		var obj any
		switch tm.Kind {
		case "Deployment":
			o := &appsv1.Deployment{}
			b.deployments, obj = append(b.deployments, o), o
		case "Service":
			o := &corev1.Service{}
			b.services, obj = append(b.services, o), o
		case "ConfigMap":
			o := &corev1.ConfigMap{}
			b.configMaps, obj = append(b.configMaps, o), o
		case "Secret":
			o := &corev1.Secret{}
			b.secrets, obj = append(b.secrets, o), o
		case "PodDisruptionBudget":
			o := &policyv1.PodDisruptionBudget{}
			b.pdbs, obj = append(b.pdbs, o), o
		case "ServiceMonitor":
			o := &monitoringv1.ServiceMonitor{}
			b.monitors, obj = append(b.monitors, o), o
		}
		strict, err := sigsjson.UnmarshalStrict(m.json, obj)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: decoding %s: %v", m.source, tm.Kind, err))
		}
		for _, e := range strict {
			problems = append(problems, fmt.Sprintf("%s: %s: %v", m.source, tm.Kind, e))
		}
	}
	return b, problems
}

// ---------------------------------------------------------------------------------------
// Checking: the objects agree with each other and with the pgfront config they carry.

type checker8s struct {
	b        *base
	problems []string
}

func (c *checker8s) bad(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

// one returns the single object of a kind, reporting none or several.
func one[T any](c *checker8s, kind string, xs []T) T {
	var zero T
	if len(xs) != 1 {
		c.bad("want exactly one %s, found %d", kind, len(xs))
		if len(xs) == 0 {
			return zero
		}
	}
	return xs[0]
}

func selects(c *checker8s, what string, sel *metav1.LabelSelector, podLabels map[string]string) bool {
	if sel == nil {
		c.bad("%s has no selector", what)
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		c.bad("%s: selector: %v", what, err)
		return false
	}
	if s.Empty() {
		c.bad("%s: empty selector (selects everything)", what)
		return false
	}
	return s.Matches(labels.Set(podLabels))
}

// file is where a path inside the container comes from.
type file struct {
	kind, name, key string // ConfigMap or Secret, its name and key
}

// files lists what the container's mounts put at each path.
func files(c *checker8s, pod *corev1.PodSpec, ctr *corev1.Container) map[string]file {
	vols := map[string]*corev1.Volume{}
	for i := range pod.Volumes {
		vols[pod.Volumes[i].Name] = &pod.Volumes[i]
	}
	out := map[string]file{}
	add := func(dir, kind, name string, items []corev1.KeyToPath) {
		if len(items) == 0 {
			// every key of the object, under its own name
			for _, k := range c.keys(kind, name) {
				out[path.Join(dir, k)] = file{kind, name, k}
			}
			return
		}
		for _, it := range items {
			out[path.Join(dir, it.Path)] = file{kind, name, it.Key}
		}
	}
	for _, vm := range ctr.VolumeMounts {
		v := vols[vm.Name]
		if v == nil {
			c.bad("container %s mounts volume %q, which the pod does not define", ctr.Name, vm.Name)
			continue
		}
		if vm.SubPath != "" {
			c.bad("container %s mounts %s with subPath: the kubelet never updates such a file, so a reload would read the old config", ctr.Name, vm.MountPath)
		}
		switch {
		case v.ConfigMap != nil:
			add(vm.MountPath, "ConfigMap", v.ConfigMap.Name, v.ConfigMap.Items)
		case v.Secret != nil:
			add(vm.MountPath, "Secret", v.Secret.SecretName, v.Secret.Items)
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				switch {
				case src.ConfigMap != nil:
					add(vm.MountPath, "ConfigMap", src.ConfigMap.Name, src.ConfigMap.Items)
				case src.Secret != nil:
					add(vm.MountPath, "Secret", src.Secret.Name, src.Secret.Items)
				}
			}
		}
	}
	return out
}

// keys returns the keys of the named ConfigMap or Secret of the base.
func (c *checker8s) keys(kind, name string) []string {
	var keys []string
	switch kind {
	case "ConfigMap":
		for _, cm := range c.b.configMaps {
			if cm.Name == name {
				for k := range cm.Data {
					keys = append(keys, k)
				}
				for k := range cm.BinaryData {
					keys = append(keys, k)
				}
			}
		}
	case "Secret":
		for _, s := range c.b.secrets {
			if s.Name == name {
				for k := range s.Data {
					keys = append(keys, k)
				}
				for k := range s.StringData {
					keys = append(keys, k)
				}
			}
		}
	}
	slices.Sort(keys)
	return keys
}

// content returns a ConfigMap key's text.
func (c *checker8s) content(f file) (string, bool) {
	for _, cm := range c.b.configMaps {
		if f.kind == "ConfigMap" && cm.Name == f.name {
			s, ok := cm.Data[f.key]
			return s, ok
		}
	}
	return "", false
}

// containerPort resolves a port given by name or number among the container's ports.
func containerPort(ctr *corev1.Container, p intstr.IntOrString) (int32, bool) {
	for _, cp := range ctr.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

func portOf(c *checker8s, what, addr string) (host string, port int32, ok bool) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		c.bad("%s %q: %v", what, addr, err)
		return "", 0, false
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		c.bad("%s %q: port: %v", what, addr, err)
		return "", 0, false
	}
	if h != "" && h != "0.0.0.0" && h != "::" {
		c.bad("%s %s listens on %s only: in a pod it must listen on every address (0.0.0.0) to be reachable through a Service or by the kubelet", what, addr, h)
	}
	return h, int32(n), true
}

// checkBase checks a decoded base; it returns every problem found.
func checkBase(b *base) []string {
	c := &checker8s{b: b}
	d := one(c, "Deployment", b.deployments)
	pdb := one(c, "PodDisruptionBudget", b.pdbs)
	sm := one(c, "ServiceMonitor", b.monitors)
	if d == nil {
		return c.problems
	}
	pod := &d.Spec.Template.Spec
	podLabels := d.Spec.Template.Labels
	if len(pod.Containers) != 1 {
		c.bad("the pod has %d containers, want one (pgfront)", len(pod.Containers))
		return c.problems
	}
	ctr := &pod.Containers[0]

	// The config: the file the container is told to read, from the ConfigMap that holds it.
	mounted := files(c, pod, ctr)
	cfgPath := ""
	for i, a := range ctr.Args {
		if (a == "-c" || a == "--c") && i+1 < len(ctr.Args) {
			cfgPath = ctr.Args[i+1]
		}
	}
	if !slices.Equal(ctr.Args[:min(1, len(ctr.Args))], []string{"run"}) || cfgPath == "" {
		c.bad("container args %q: want run -c FILE", ctr.Args)
		return c.problems
	}
	src, ok := mounted[cfgPath]
	if !ok {
		c.bad("the config %s is not provided by any volume mount", cfgPath)
		return c.problems
	}
	text, ok := c.content(src)
	if !ok {
		c.bad("the config %s comes from %s %s key %s, which does not exist", cfgPath, src.kind, src.name, src.key)
		return c.problems
	}
	cfg, warnings, err := config.Parse([]byte(text), src.name+"/"+src.key)
	if err != nil {
		c.bad("the config in %s %s does not load: %v", src.kind, src.name, err)
		return c.problems
	}
	for _, w := range warnings {
		c.bad("the config in %s %s has a lint warning: %s", src.kind, src.name, w)
	}

	// Every file the config names is mounted, from a key that exists.
	refs := map[string]string{
		"admin.read_token_file":  cfg.Admin.ReadTokenFile,
		"admin.admin_token_file": cfg.Admin.AdminTokenFile,
		"fleet.secret_file":      cfg.Fleet.SecretFile,
	}
	for _, name := range cfg.ClusterNames() {
		cl := cfg.Clusters[name]
		refs["clusters."+name+".health.password_file"] = cl.Health.PasswordFile
		refs["clusters."+name+".server_tls.ca_file"] = cl.ServerTLS.CAFile
		refs["clusters."+name+".server_tls.cert_file"] = cl.ServerTLS.CertFile
		refs["clusters."+name+".server_tls.key_file"] = cl.ServerTLS.KeyFile
	}
	for _, name := range cfg.RouteNames() {
		r := cfg.Routes[name]
		refs["routes."+name+".tls.cert_file"] = r.TLS.CertFile
		refs["routes."+name+".tls.key_file"] = r.TLS.KeyFile
		refs["routes."+name+".tls.client_ca_file"] = r.TLS.ClientCAFile
	}
	for key, p := range refs {
		if p == "" {
			continue
		}
		f, ok := mounted[p]
		if !ok {
			c.bad("config %s: %s is not provided by any volume mount", key, p)
		} else if !slices.Contains(c.keys(f.kind, f.name), f.key) {
			c.bad("config %s: %s comes from %s %s key %q, which does not exist", key, p, f.kind, f.name, f.key)
		}
	}

	// The Deployment.
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		c.bad("Deployment replicas must be at least 2")
	}
	if !selects(c, "Deployment", d.Spec.Selector, podLabels) {
		c.bad("Deployment selector does not match its pod template's labels %v", podLabels)
	}
	aff := pod.Affinity
	if aff == nil || aff.PodAntiAffinity == nil || len(aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) == 0 {
		c.bad("the pod has no preferred pod anti-affinity")
	} else {
		for _, t := range aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			if t.PodAffinityTerm.TopologyKey != "kubernetes.io/hostname" {
				c.bad("pod anti-affinity topologyKey %q, want kubernetes.io/hostname", t.PodAffinityTerm.TopologyKey)
			}
			if !selects(c, "pod anti-affinity", t.PodAffinityTerm.LabelSelector, podLabels) {
				c.bad("pod anti-affinity does not select pgfront's own pods")
			}
		}
	}
	if ctr.Image == "" {
		c.bad("container %s has no image", ctr.Name)
	}

	// Ports: every route and the admin listener, on every address, declared on the container.
	type listener struct {
		what string
		port int32
	}
	var listeners []listener
	for _, name := range cfg.RouteNames() {
		if _, p, ok := portOf(c, "route "+name+" listen", cfg.Routes[name].Listen); ok {
			listeners = append(listeners, listener{"route " + name, p})
		}
	}
	adminPort := int32(0)
	if cfg.Admin.Listen == "" {
		c.bad("the config turns the admin listener off: probes and metrics need it")
	} else if _, p, ok := portOf(c, "admin.listen", cfg.Admin.Listen); ok {
		adminPort = p
		listeners = append(listeners, listener{"admin", p})
	}
	lowPort := false
	for _, l := range listeners {
		if _, ok := containerPort(ctr, intstr.FromInt32(l.port)); !ok {
			c.bad("%s listens on port %d, which the container does not declare", l.what, l.port)
		}
		lowPort = lowPort || l.port < 1024
	}
	for _, cp := range ctr.Ports {
		if !slices.ContainsFunc(listeners, func(l listener) bool { return l.port == cp.ContainerPort }) {
			c.bad("container port %s (%d) is no listener of the config", cp.Name, cp.ContainerPort)
		}
		for _, msg := range validation.IsValidPortName(cp.Name) {
			c.bad("container port name %q: %s", cp.Name, msg)
		}
	}

	// Probes and lifecycle: no exec (the image has no shell), readiness on /healthz of the
	// admin listener, liveness on the admin port but not on /healthz.
	for _, h := range []struct {
		what  string
		exec  bool
		probe *corev1.Probe
	}{
		{"readinessProbe", ctr.ReadinessProbe != nil && ctr.ReadinessProbe.Exec != nil, ctr.ReadinessProbe},
		{"livenessProbe", ctr.LivenessProbe != nil && ctr.LivenessProbe.Exec != nil, ctr.LivenessProbe},
		{"startupProbe", ctr.StartupProbe != nil && ctr.StartupProbe.Exec != nil, ctr.StartupProbe},
		{"lifecycle.preStop", ctr.Lifecycle != nil && ctr.Lifecycle.PreStop != nil && ctr.Lifecycle.PreStop.Exec != nil, nil},
		{"lifecycle.postStart", ctr.Lifecycle != nil && ctr.Lifecycle.PostStart != nil && ctr.Lifecycle.PostStart.Exec != nil, nil},
	} {
		if h.exec {
			c.bad("%s runs a command: the image is FROM scratch, with no shell or sleep binary", h.what)
		}
	}
	if rp := ctr.ReadinessProbe; rp == nil || rp.HTTPGet == nil {
		c.bad("readinessProbe must be an httpGet of /healthz on the admin listener")
	} else {
		if rp.HTTPGet.Path != "/healthz" {
			c.bad("readinessProbe path %q, want /healthz (503 as soon as a drain starts)", rp.HTTPGet.Path)
		}
		if p, ok := containerPort(ctr, rp.HTTPGet.Port); !ok || p != adminPort {
			c.bad("readinessProbe port %s is not the admin listener's port %d", rp.HTTPGet.Port.String(), adminPort)
		}
	}
	if lp := ctr.LivenessProbe; lp == nil {
		c.bad("no livenessProbe")
	} else {
		var port intstr.IntOrString
		switch {
		case lp.HTTPGet != nil:
			port = lp.HTTPGet.Port
			if lp.HTTPGet.Path == "/healthz" {
				c.bad("livenessProbe on /healthz: it answers 503 during a drain, and the kubelet would restart pgfront mid-drain")
			}
		case lp.TCPSocket != nil:
			port = lp.TCPSocket.Port
		default:
			c.bad("livenessProbe must be a tcpSocket or httpGet probe of the admin listener")
		}
		if p, ok := containerPort(ctr, port); !ok || p != adminPort {
			c.bad("livenessProbe port %s is not the admin listener's port %d", port.String(), adminPort)
		}
	}
	preStop := time.Duration(0)
	switch {
	case ctr.Lifecycle == nil || ctr.Lifecycle.PreStop == nil:
		c.bad("no preStop: the pod would stop accepting before the Services have dropped it")
	case ctr.Lifecycle.PreStop.Sleep != nil:
		preStop = time.Duration(ctr.Lifecycle.PreStop.Sleep.Seconds) * time.Second
		if preStop <= 0 {
			c.bad("preStop sleeps %v: give the endpoints a few seconds", preStop)
		}
	case ctr.Lifecycle.PreStop.HTTPGet == nil:
		c.bad("preStop must be a sleep or an httpGet action")
	}
	switch tg := pod.TerminationGracePeriodSeconds; {
	case tg == nil:
		c.bad("terminationGracePeriodSeconds is not set (Kubernetes' default 30s is not above preStop + shutdown.grace)")
	case time.Duration(*tg)*time.Second <= preStop+cfg.Shutdown.Grace.D():
		c.bad("terminationGracePeriodSeconds %d is not above preStop (%v) + shutdown.grace (%v): the kubelet would SIGKILL a drain", *tg, preStop, cfg.Shutdown.Grace.D())
	}

	// Resources and security.
	req, lim := ctr.Resources.Requests, ctr.Resources.Limits
	if req.Cpu().IsZero() || req.Memory().IsZero() {
		c.bad("container resources.requests must set cpu and memory")
	}
	if lim.Memory().IsZero() {
		c.bad("container resources.limits must set memory")
	}
	sc := ctr.SecurityContext
	podNonRoot := pod.SecurityContext != nil && pod.SecurityContext.RunAsNonRoot != nil && *pod.SecurityContext.RunAsNonRoot
	switch {
	case sc == nil:
		c.bad("container has no securityContext")
	default:
		if !(podNonRoot || (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot)) {
			c.bad("runAsNonRoot is not set")
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			c.bad("readOnlyRootFilesystem is not set")
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			c.bad("allowPrivilegeEscalation must be false")
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			c.bad("capabilities must drop ALL")
		} else {
			for _, add := range sc.Capabilities.Add {
				if add != "NET_BIND_SERVICE" || !lowPort {
					c.bad("capability %s added: pgfront needs none (NET_BIND_SERVICE only for a port below 1024)", add)
				}
			}
		}
	}
	for _, e := range ctr.Env {
		if e.Name != "RUNTIME_DIRECTORY" {
			continue
		}
		writable := false
		for _, vm := range ctr.VolumeMounts {
			if vm.MountPath == e.Value && !vm.ReadOnly {
				for _, v := range pod.Volumes {
					writable = writable || (v.Name == vm.Name && v.EmptyDir != nil)
				}
			}
		}
		if !writable {
			c.bad("RUNTIME_DIRECTORY %s is not a writable emptyDir mount", e.Value)
		}
	}

	// Services: one per route on the route's port, one for the admin listener, each reaching
	// a declared container port of pgfront's pods.
	adminSvcPort := ""
	var adminSvc *corev1.Service
	for _, l := range listeners {
		found := 0
		for _, s := range b.services {
			for _, sp := range s.Spec.Ports {
				target, ok := containerPort(ctr, sp.TargetPort)
				if sp.TargetPort.Type == intstr.Int && sp.TargetPort.IntVal == 0 {
					target, ok = containerPort(ctr, intstr.FromInt32(sp.Port)) // targetPort defaults to port
				}
				if !ok || target != l.port {
					continue
				}
				found++
				if sp.Port != l.port {
					c.bad("Service %s port %s is %d, not the %s port %d", s.Name, sp.Name, sp.Port, l.what, l.port)
				}
				if l.what == "admin" && s.Spec.ClusterIP != corev1.ClusterIPNone { // not the peers' headless one
					adminSvcPort, adminSvc = sp.Name, s
				}
			}
		}
		if found == 0 {
			c.bad("no Service reaches the %s port %d", l.what, l.port)
		}
	}
	for _, s := range b.services {
		if !selects(c, "Service "+s.Name, &metav1.LabelSelector{MatchLabels: s.Spec.Selector}, podLabels) {
			c.bad("Service %s does not select pgfront's pods", s.Name)
		}
		for _, sp := range s.Spec.Ports {
			if _, ok := containerPort(ctr, sp.TargetPort); !ok && !(sp.TargetPort.Type == intstr.Int && sp.TargetPort.IntVal == 0) {
				c.bad("Service %s port %s: targetPort %s is not a port of the container", s.Name, sp.Name, sp.TargetPort.String())
			}
			for _, msg := range validation.IsValidPortName(sp.Name) {
				c.bad("Service %s port name %q: %s", s.Name, sp.Name, msg)
			}
		}
	}

	// The fleet: with more than one pod a CancelRequest may reach another pod than the one
	// holding the session, so the pods must be peers. dns_peers names a headless Service of
	// the base that keeps not-ready (draining) pods and reaches the admin port.
	reachable := len(cfg.Fleet.DNSPeers)
	for _, peer := range cfg.Fleet.Peers {
		host := peer
		if u, err := url.Parse(peer); err == nil && u.Host != "" {
			host = u.Host
		}
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			reachable++
		}
	}
	if d.Spec.Replicas != nil && *d.Spec.Replicas > 1 && reachable == 0 {
		c.bad("%d replicas but the config has no fleet peers another pod can reach: a CancelRequest that reaches another pod than the session's is lost", *d.Spec.Replicas)
	}
	for _, dp := range cfg.Fleet.DNSPeers {
		svcName, portText, _ := net.SplitHostPort(dp)
		if strings.Contains(svcName, ".") {
			c.bad("fleet.dns_peers %s: name the base's headless Service alone (%q resolves in the pods' own namespace); a longer name may be another namespace's", dp, strings.Split(svcName, ".")[0])
			continue
		}
		var svc *corev1.Service
		for _, s := range b.services {
			if s.Name == svcName {
				svc = s
			}
		}
		switch {
		case svc == nil:
			c.bad("fleet.dns_peers %s: no Service %s in the base", dp, svcName)
			continue
		case svc.Spec.ClusterIP != corev1.ClusterIPNone:
			c.bad("fleet.dns_peers %s: Service %s is not headless (clusterIP: None), so its name gives one address, not every pod's", dp, svcName)
		case !svc.Spec.PublishNotReadyAddresses:
			c.bad("fleet.dns_peers %s: Service %s leaves not-ready pods out, but a draining pod still holds sessions (publishNotReadyAddresses: true)", dp, svcName)
		}
		reaches := false
		for _, sp := range svc.Spec.Ports {
			target, ok := containerPort(ctr, sp.TargetPort)
			reaches = reaches || (ok && strconv.Itoa(int(target)) == portText && strconv.Itoa(int(sp.Port)) == portText && target == adminPort)
		}
		if !reaches {
			c.bad("fleet.dns_peers %s: Service %s has no port %s reaching the admin listener's port %d", dp, svcName, portText, adminPort)
		}
	}

	// PodDisruptionBudget.
	if pdb != nil {
		switch ma := pdb.Spec.MinAvailable; {
		case ma == nil || ma.Type != intstr.Int:
			c.bad("PodDisruptionBudget must set minAvailable to a number")
		case ma.IntVal < 1 || (d.Spec.Replicas != nil && ma.IntVal >= *d.Spec.Replicas):
			c.bad("PodDisruptionBudget minAvailable %d: want at least 1 and below the replicas, or no node could ever be drained", ma.IntVal)
		}
		if !selects(c, "PodDisruptionBudget", pdb.Spec.Selector, podLabels) {
			c.bad("PodDisruptionBudget does not select pgfront's pods")
		}
	}

	// ServiceMonitor: the admin Service, its metrics port, the read token from the Secret key
	// the pods read it from.
	if sm != nil {
		selected := 0
		for _, s := range b.services {
			if selects(c, "ServiceMonitor", &sm.Spec.Selector, s.Labels) {
				selected++
				if s != adminSvc {
					c.bad("ServiceMonitor selects Service %s, which is not the admin listener's", s.Name)
				}
			}
		}
		if selected == 0 {
			c.bad("ServiceMonitor selects no Service")
		}
		if len(sm.Spec.Endpoints) != 1 {
			c.bad("ServiceMonitor has %d endpoints, want one", len(sm.Spec.Endpoints))
		}
		for _, ep := range sm.Spec.Endpoints {
			if ep.Port != adminSvcPort {
				c.bad("ServiceMonitor endpoint port %q is not the admin Service's port name %q", ep.Port, adminSvcPort)
			}
			if ep.Path != "/metrics" {
				c.bad("ServiceMonitor endpoint path %q, want /metrics", ep.Path)
			}
			tokenFile := cfg.Admin.ReadTokenFile
			if tokenFile == "" {
				tokenFile = cfg.Admin.AdminTokenFile
			}
			auth := ep.Authorization
			switch {
			case tokenFile == "" && cfg.Admin.ReadTokenEnv == "" && cfg.Admin.AdminTokenEnv == "":
			case auth == nil || auth.Credentials == nil:
				c.bad("ServiceMonitor sends no bearer token, but the admin listener requires one for /metrics")
			case tokenFile != "" && mounted[tokenFile] != (file{"Secret", auth.Credentials.Name, auth.Credentials.Key}):
				c.bad("ServiceMonitor sends Secret %s key %s, but the pods read the token %s from %v", auth.Credentials.Name, auth.Credentials.Key, tokenFile, mounted[tokenFile])
			}
			if auth != nil && auth.Type != "" && auth.Type != "Bearer" {
				c.bad("ServiceMonitor authorization type %q, want Bearer", auth.Type)
			}
		}
	}
	return c.problems
}

// renderAndCheck renders, decodes and checks the base in fsys.
func renderAndCheck(fsys fs.FS) []string {
	ms, problems := render(fsys)
	b, more := decode(ms)
	problems = append(problems, more...)
	return append(problems, checkBase(b)...)
}

// ---------------------------------------------------------------------------------------

// TestKubernetesBase: every manifest of deploy/kubernetes decodes strictly into its API type,
// and the objects agree with each other and with the pgfront config in the ConfigMap.
func TestKubernetesBase(t *testing.T) {
	ms, problems := render(os.DirFS(kustomizeDir))
	kinds := map[string]int{}
	for _, m := range ms {
		kinds[m.kind]++
	}
	want := map[string]int{"Deployment": 1, "Service": 4, "ConfigMap": 1, "Secret": 1, "PodDisruptionBudget": 1, "ServiceMonitor": 1}
	if !reflect.DeepEqual(kinds, want) {
		t.Errorf("rendered kinds %v, want %v", kinds, want)
	}
	b, more := decode(ms)
	problems = append(problems, more...)
	problems = append(problems, checkBase(b)...)
	for _, p := range problems {
		t.Error(p)
	}
}

// TestKubernetesRenderMatchesKubectl renders the base with kubectl's kustomize, where kubectl
// is installed, and compares: the test's renderer must agree with the real one.
func TestKubernetesRenderMatchesKubectl(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not found (Debian package kubectl or kubernetes-client): the base is rendered by this test's own kustomize subset only")
	}
	var stderr bytes.Buffer
	cmd := exec.Command(kubectl, "kustomize", kustomizeDir)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v\n%s", err, stderr.String())
	}
	objects := func(docs [][]byte) map[string]any {
		m := map[string]any{}
		for _, d := range docs {
			var o map[string]any
			if err := sigsyaml.Unmarshal(d, &o); err != nil {
				t.Fatalf("%v in\n%s", err, d)
			}
			if o == nil {
				continue
			}
			md, _ := o["metadata"].(map[string]any)
			m[fmt.Sprintf("%v/%v", o["kind"], md["name"])] = o
		}
		return m
	}
	var theirs [][]byte
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		theirs = append(theirs, doc)
	}
	ms, problems := render(os.DirFS(kustomizeDir))
	if len(problems) > 0 {
		t.Fatalf("render: %v", problems)
	}
	var ours [][]byte
	for _, m := range ms {
		ours = append(ours, m.json)
	}
	got, want := objects(ours), objects(theirs)
	for id, o := range want {
		if !reflect.DeepEqual(got[id], o) {
			g, _ := sigsyaml.Marshal(got[id])
			w, _ := sigsyaml.Marshal(o)
			t.Errorf("%s: this test renders\n%s\nkubectl kustomize renders\n%s", id, g, w)
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			t.Errorf("%s: rendered by this test, not by kubectl kustomize", id)
		}
	}
}

// TestKubernetesCheckerReportsMistakes breaks the base one way at a time: each mistake must
// be reported.
func TestKubernetesCheckerReportsMistakes(t *testing.T) {
	orig := fstest.MapFS{}
	entries, err := os.ReadDir(kustomizeDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(path.Join(kustomizeDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		orig[e.Name()] = &fstest.MapFile{Data: data}
	}
	if problems := renderAndCheck(orig); len(problems) > 0 {
		t.Fatalf("the base itself has problems: %v", problems)
	}
	for _, tc := range []struct {
		name, file, old, new, want string
	}{
		{"misspelt field", "deployment.yaml", "terminationGracePeriodSeconds: 45", "terminationGracePeriodSecond: 45", `unknown field "spec.template.spec.terminationGracePeriodSecond"`},
		{"field in the wrong case", "deployment.yaml", "containerPort: 5001", "containerport: 5001", `unknown field "spec.template.spec.containers[0].ports[1].containerport"`},
		{"duplicate key", "deployment.yaml", "  replicas: 2\n", "  replicas: 2\n  replicas: 3\n", `"replicas" already set`},
		{"wrong type", "poddisruptionbudget.yaml", "minAvailable: 1", "minAvailable: [1]", "decoding PodDisruptionBudget"},
		{"wrong apiVersion", "poddisruptionbudget.yaml", "apiVersion: policy/v1", "apiVersion: policy/v1beta1", `apiVersion "policy/v1beta1"`},
		{"unknown kind", "secret.yaml", "kind: Secret", "kind: Sekret", `kind "Sekret"`},
		{"ServiceMonitor field", "servicemonitor.yaml", "interval: 15s", "intervall: 15s", `unknown field "spec.endpoints[0].intervall"`},
		{"kustomization field", "kustomization.yaml", "resources:", "resource:", "kustomization.yaml"},
		{"missing resource", "kustomization.yaml", "- secret.yaml", "- secrets.yaml", "resource secrets.yaml"},
		{"name hash", "kustomization.yaml", "disableNameSuffixHash: true", "disableNameSuffixHash: false", "disableNameSuffixHash must be true"},
		{"config invalid", "pgfront.yaml", "role: replica", "role: replika", "does not load"},
		{"config lint", "pgfront.yaml", "  grace: 30s", "  grace: 30s\ntimeouts:\n  client_fin: 0s", "lint warning"},
		{"wrong Service port", "services.yaml", "port: 5001", "port: 5002", "is 5002, not the route ro port 5001"},
		{"route port not declared", "pgfront.yaml", "listen: 0.0.0.0:5001", "listen: 0.0.0.0:5003", "port 5003, which the container does not declare"},
		{"route on loopback", "pgfront.yaml", "listen: 0.0.0.0:5000", "listen: 127.0.0.1:5000", "listens on 127.0.0.1 only"},
		{"dangling targetPort", "services.yaml", "targetPort: ro", "targetPort: r0", "targetPort r0 is not a port of the container"},
		{"Service selector", "services.yaml", "  selector:\n    app.kubernetes.io/name: pgfront\n  ports:\n    - name: ro", "  selector:\n    app.kubernetes.io/name: pgfrnt\n  ports:\n    - name: ro", "Service pgfront-ro does not select"},
		{"readiness path", "deployment.yaml", "path: /healthz", "path: /health", `readinessProbe path "/health"`},
		{"readiness port", "deployment.yaml", "path: /healthz\n              port: admin", "path: /healthz\n              port: rw", "readinessProbe port rw"},
		{"liveness on healthz", "deployment.yaml", "tcpSocket:\n              port: admin", "httpGet:\n              path: /healthz\n              port: admin", "livenessProbe on /healthz"},
		{"grace too short", "deployment.yaml", "terminationGracePeriodSeconds: 45", "terminationGracePeriodSeconds: 35", "terminationGracePeriodSeconds 35 is not above"},
		{"grace raised in config", "pgfront.yaml", "grace: 30s", "grace: 60s", "shutdown.grace (1m0s)"},
		{"preStop shell", "deployment.yaml", "sleep:\n                seconds: 5", "exec:\n                command: [sh, -c, sleep 5]", "lifecycle.preStop runs a command"},
		{"one replica", "deployment.yaml", "replicas: 2", "replicas: 1", "replicas must be at least 2"},
		{"anti-affinity key", "deployment.yaml", "topologyKey: kubernetes.io/hostname", "topologyKey: kubernetes.io/host", `topologyKey "kubernetes.io/host"`},
		{"writable root", "deployment.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "readOnlyRootFilesystem is not set"},
		{"capabilities kept", "deployment.yaml", `drop: ["ALL"]`, `drop: ["NET_RAW"]`, "capabilities must drop ALL"},
		{"no memory limit", "deployment.yaml", "limits:\n              memory: 512Mi", "limits: {}", "limits must set memory"},
		{"token not mounted", "deployment.yaml", "- key: read.token\n                      path: read.token", "- key: read.token\n                      path: read-token", "admin.read_token_file: /etc/pgfront/read.token is not provided"},
		{"token key missing", "secret.yaml", "  read.token: REPLACE", "  read-token: REPLACE", `key "read.token", which does not exist`},
		{"subPath mount", "deployment.yaml", "mountPath: /etc/pgfront\n", "mountPath: /etc/pgfront\n              subPath: x\n", "subPath"},
		{"runtime dir", "deployment.yaml", "value: /run/pgfront", "value: /tmp", "RUNTIME_DIRECTORY /tmp"},
		{"PDB minAvailable", "poddisruptionbudget.yaml", "minAvailable: 1", "minAvailable: 2", "minAvailable 2"},
		{"monitor port", "servicemonitor.yaml", "- port: admin", "- port: metrics", `endpoint port "metrics"`},
		{"monitor path", "servicemonitor.yaml", "path: /metrics", "path: /metric", `endpoint path "/metric"`},
		{"monitor selector", "servicemonitor.yaml", "app.kubernetes.io/component: admin", "app.kubernetes.io/component: route", "selects Service pgfront-rw"},
		{"monitor token", "servicemonitor.yaml", "key: read.token", "key: admin.token", "sends Secret pgfront key admin.token"},
		{"port name", "services.yaml", "- name: rw", "- name: read_write", `port name "read_write"`},
		{"no fleet", "pgfront.yaml", "  dns_peers: [pgfront-peers:9187]\n", "", "2 replicas but the config has no fleet peers"},
		{"loopback peers only", "pgfront.yaml", "  dns_peers: [pgfront-peers:9187]\n", "  peers: [127.0.0.1:9187, \"http://localhost:9188\"]\n", "2 replicas but the config has no fleet peers"},
		{"peers in another namespace", "pgfront.yaml", "dns_peers: [pgfront-peers:9187]", "dns_peers: [pgfront-peers.other-ns:9187]", "name the base's headless Service alone"},
		{"fleet key not mounted", "deployment.yaml", "- key: fleet.key\n                      path: fleet.key", "- key: fleet.key\n                      path: fleet-key", "fleet.secret_file: /etc/pgfront/fleet.key is not provided"},
		{"fleet key missing", "secret.yaml", "  fleet.key: REPLACE", "  fleet-key: REPLACE", `key "fleet.key", which does not exist`},
		{"peers Service missing", "pgfront.yaml", "dns_peers: [pgfront-peers:9187]", "dns_peers: [pgfront-peer:9187]", "no Service pgfront-peer in the base"},
		{"peers Service not headless", "services.yaml", "  clusterIP: None\n", "", "Service pgfront-peers is not headless"},
		{"peers Service without draining pods", "services.yaml", "publishNotReadyAddresses: true", "publishNotReadyAddresses: false", "leaves not-ready pods out"},
		{"peers port", "pgfront.yaml", "dns_peers: [pgfront-peers:9187]", "dns_peers: [pgfront-peers:9188]", "has no port 9188 reaching the admin listener's port 9187"},
	} {
		fsys := fstest.MapFS{}
		for k, v := range orig {
			fsys[k] = &fstest.MapFile{Data: v.Data}
		}
		f := fsys[tc.file]
		if f == nil || !bytes.Contains(f.Data, []byte(tc.old)) {
			t.Fatalf("%s: %q is not in %s", tc.name, tc.old, tc.file)
		}
		f.Data = bytes.Replace(f.Data, []byte(tc.old), []byte(tc.new), 1)
		problems := renderAndCheck(fsys)
		if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.want) }) {
			t.Errorf("%s: problems %q, want one containing %q", tc.name, problems, tc.want)
		}
	}
}
