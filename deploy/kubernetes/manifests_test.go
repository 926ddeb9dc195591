package kubernetes

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/yaml"
)

// cohortUID is the unprivileged user of the Cohort image (deploy/Dockerfile).
const cohortUID = 65532

// kustomization is the part of a kustomize Kustomization these manifests
// use; it is decoded as strictly as the Kubernetes objects.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
}

// kinds are the "apiVersion kind" pairs these manifests may hold. Others,
// a Secret above all, are refused.
var kinds = []string{
	"v1 Namespace",
	"v1 ConfigMap",
	"v1 Service",
	"v1 PersistentVolumeClaim",
	"apps/v1 StatefulSet",
	"apps/v1 Deployment",
	"policy/v1 PodDisruptionBudget",
	"networking.k8s.io/v1 NetworkPolicy",
	kustomizationKind,
}

const kustomizationKind = "kustomize.config.k8s.io/v1beta1 Kustomization"

// apiDecoder decodes YAML into the registered Kubernetes types as the API
// server does in strict field validation: field names are case-sensitive,
// and an unknown or duplicated field is an error.
var apiDecoder = func() runtime.Decoder {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme, networkingv1.AddToScheme} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	return kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme, kjson.SerializerOptions{Yaml: true, Strict: true})
}()

// decode decodes one YAML document into the typed object its apiVersion
// and kind name, strictly: an unexpected apiVersion or kind, an unknown or
// duplicated field (field names are case-sensitive), or a value of the
// wrong type is an error.
func decode(doc []byte) (any, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, fmt.Errorf("read apiVersion and kind: %w", err)
	}
	switch key := tm.APIVersion + " " + tm.Kind; {
	case !slices.Contains(kinds, key):
		return nil, fmt.Errorf("apiVersion %q kind %q is not expected here (want one of: %s)", tm.APIVersion, tm.Kind, strings.Join(kinds, ", "))
	case key == kustomizationKind:
		return decodeKustomization(doc)
	}
	obj, _, err := apiDecoder.Decode(doc, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", tm.APIVersion, tm.Kind, err)
	}
	return obj, nil
}

// decodeKustomization decodes a kustomization.yaml strictly. encoding/json,
// under sigs.k8s.io/yaml, matches field names case-insensitively; decoding
// a second time case-sensitively and comparing finds a field whose case is
// wrong (it is then missing from the second result).
func decodeKustomization(doc []byte) (*kustomization, error) {
	var k, exact kustomization
	if err := yaml.UnmarshalStrict(doc, &k); err != nil {
		return nil, fmt.Errorf("kustomization: %w", err)
	}
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, fmt.Errorf("kustomization: %w", err)
	}
	if err := utiljson.Unmarshal(j, &exact); err != nil {
		return nil, fmt.Errorf("kustomization: %w", err)
	}
	if !reflect.DeepEqual(k, exact) {
		return nil, errors.New("kustomization: a field name's case is wrong")
	}
	return &k, nil
}

// splitDocuments splits a YAML stream on its "---" lines and drops the
// documents that hold only comments and blank lines.
func splitDocuments(data []byte) [][]byte {
	var docs [][]byte
	var cur []byte
	flush := func() {
		for _, line := range strings.Split(string(cur), "\n") {
			if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
				docs = append(docs, cur)
				break
			}
		}
		cur = nil
	}
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		if string(bytes.TrimRight(line, " \t\r\n")) == "---" {
			flush()
			continue
		}
		cur = append(cur, line...)
	}
	flush()
	return docs
}

// manifest is one decoded document.
type manifest struct {
	file string // slash-separated path under deploy/kubernetes
	doc  int    // the document's index in the file
	obj  any
}

func (m manifest) String() string { return fmt.Sprintf("%s (document %d)", m.file, m.doc+1) }

// dir is the directory of the manifest's file: one deployable unit.
func (m manifest) dir() string { return path.Dir(m.file) }

// loadManifests decodes every *.yaml and *.yml file under this directory.
func loadManifests(t *testing.T) []manifest {
	t.Helper()
	var ms []manifest
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || (filepath.Ext(p) != ".yaml" && filepath.Ext(p) != ".yml") {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		docs := splitDocuments(data)
		if len(docs) == 0 {
			t.Errorf("%s: no document", p)
		}
		for i, doc := range docs {
			obj, err := decode(doc)
			if err != nil {
				t.Errorf("%s (document %d): %v", p, i+1, err)
				continue
			}
			ms = append(ms, manifest{file: filepath.ToSlash(p), doc: i, obj: obj})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 {
		t.Fatal("no manifests found")
	}
	return ms
}

// objects returns the decoded objects of type *T, with their manifests.
func objects[T any](ms []manifest) ([]*T, []manifest) {
	var objs []*T
	var from []manifest
	for _, m := range ms {
		if o, ok := m.obj.(*T); ok {
			objs = append(objs, o)
			from = append(from, m)
		}
	}
	return objs, from
}

// workload is a StatefulSet or a Deployment.
type workload struct {
	m        manifest
	kind     string
	meta     metav1.ObjectMeta
	replicas int32
	selector *metav1.LabelSelector
	pod      *corev1.PodTemplateSpec
	claims   []corev1.PersistentVolumeClaim // a StatefulSet's volumeClaimTemplates
	sts      *appsv1.StatefulSet            // nil for a Deployment
}

func (w workload) String() string { return w.kind + " " + w.meta.Namespace + "/" + w.meta.Name }

// podNames returns the names of the pods, for a StatefulSet; nil otherwise.
func (w workload) podNames() []string {
	if w.sts == nil {
		return nil
	}
	var names []string
	for i := range w.replicas {
		names = append(names, fmt.Sprintf("%s-%d", w.meta.Name, i))
	}
	return names
}

// podLabelSets returns the label sets the workload's pods carry: the
// template's, plus for a StatefulSet the pod-name label its controller adds.
func (w workload) podLabelSets() []labels.Set {
	names := w.podNames()
	if names == nil {
		return []labels.Set{labels.Set(w.pod.Labels)}
	}
	var sets []labels.Set
	for _, n := range names {
		s := labels.Merge(labels.Set(w.pod.Labels), labels.Set{appsv1.StatefulSetPodNameLabel: n})
		sets = append(sets, s)
	}
	return sets
}

func workloads(t *testing.T, ms []manifest) []workload {
	t.Helper()
	var ws []workload
	stss, from := objects[appsv1.StatefulSet](ms)
	for i, s := range stss {
		ws = append(ws, workload{m: from[i], kind: "StatefulSet", meta: s.ObjectMeta, replicas: deref(s.Spec.Replicas, 1),
			selector: s.Spec.Selector, pod: &s.Spec.Template, claims: s.Spec.VolumeClaimTemplates, sts: s})
	}
	deps, from := objects[appsv1.Deployment](ms)
	for i, d := range deps {
		ws = append(ws, workload{m: from[i], kind: "Deployment", meta: d.ObjectMeta, replicas: deref(d.Spec.Replicas, 1),
			selector: d.Spec.Selector, pod: &d.Spec.Template})
	}
	if len(ws) == 0 {
		t.Fatal("no StatefulSet or Deployment")
	}
	return ws
}

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// selects reports whether sel matches set. A nil or empty selector
// matches nothing here: every selector in these manifests must name labels.
func selects(t *testing.T, sel *metav1.LabelSelector, set labels.Set) bool {
	t.Helper()
	if sel == nil || (len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0) {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Errorf("selector %v: %v", sel, err)
		return false
	}
	return s.Matches(set)
}

// imageName is an image reference without its tag or digest.
func imageName(image string) string {
	image, _, _ = strings.Cut(image, "@")
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	return image
}

// isCohort reports whether c runs the Cohort image.
func isCohort(c *corev1.Container) bool { return path.Base(imageName(c.Image)) == "cohort" }

// findPort returns the container port p names (by name or by number).
func findPort(c *corev1.Container, p intstr.IntOrString) (corev1.ContainerPort, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp, true
		}
	}
	return corev1.ContainerPort{}, false
}

// protocol is a port's protocol, TCP when unset (the API's default).
func protocol(p corev1.Protocol) corev1.Protocol {
	if p == "" {
		return corev1.ProtocolTCP
	}
	return p
}

func TestManifestsDecodeStrictly(t *testing.T) {
	ms := loadManifests(t)
	count := map[string]int{}
	namespaces := map[string]string{} // directory -> its Namespace
	for _, m := range ms {
		if ns, ok := m.obj.(*corev1.Namespace); ok {
			if prev, dup := namespaces[m.dir()]; dup {
				t.Errorf("%s: a second Namespace (%s) in %s, which already has %s", m, ns.Name, m.dir(), prev)
			}
			namespaces[m.dir()] = ns.Name
		}
	}
	seen := map[string]manifest{}
	for _, m := range ms {
		kind := fmt.Sprintf("%T", m.obj)
		count[kind]++
		o, ok := m.obj.(metav1.Object)
		if !ok {
			continue // a Kustomization
		}
		if o.GetName() == "" {
			t.Errorf("%s: no metadata.name", m)
		}
		if _, isNS := m.obj.(*corev1.Namespace); !isNS {
			if want := namespaces[m.dir()]; want == "" || o.GetNamespace() != want {
				t.Errorf("%s: namespace %q, want the namespace of %s/namespace.yaml (%q)", m, o.GetNamespace(), m.dir(), want)
			}
		}
		key := kind + " " + o.GetNamespace() + "/" + o.GetName()
		if prev, dup := seen[key]; dup {
			t.Errorf("%s: %s is also defined in %s", m, key, prev)
		}
		seen[key] = m
	}
	for _, want := range []string{"*v1.StatefulSet", "*v1.Deployment", "*v1.Service", "*v1.ConfigMap",
		"*v1.PodDisruptionBudget", "*v1.NetworkPolicy", "*v1.PersistentVolumeClaim", "*kubernetes.kustomization"} {
		if count[want] == 0 {
			t.Errorf("no %s among the manifests", want)
		}
	}
	t.Logf("%d documents decoded strictly: %v", len(ms), count)
}

// TestDecodeRefusesMistakes shows that decode, the function that reads
// every manifest, refuses a manifest with a mistake in it: each case
// changes one thing in a real manifest, which decodes unchanged.
func TestDecodeRefusesMistakes(t *testing.T) {
	const sts, kust = "coordinator/statefulset.yaml", "coordinator/kustomization.yaml"
	tests := []struct {
		name, file, old, new string
	}{
		{"misspelled field", sts, "\n  replicas: 3\n", "\n  replicass: 3\n"},
		{"string where an int is expected", sts, "\n  replicas: 3\n", "\n  replicas: \"3\"\n"},
		{"word where an int is expected", sts, "\n  replicas: 3\n", "\n  replicas: three\n"},
		{"duplicate field", sts, "\n  replicas: 3\n", "\n  replicas: 3\n  replicas: 5\n"},
		{"field name in the wrong case", sts, "readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true"},
		{"misspelled field in a list item", sts, "containerPort: 7402", "containerPort: 7402\n              protocl: TCP"},
		{"list where a string is expected", sts, "image: cohort:dev", "image: [cohort:dev]"},
		{"bad quantity", sts, "storage: 20Gi", "storage: 20 gigabytes"},
		{"unknown kind", sts, "kind: StatefulSet", "kind: StatefullSet"},
		{"kind in the wrong API group", sts, "apiVersion: apps/v1", "apiVersion: v1"},
		{"field of another kind", sts, "\n  serviceName: cohort-coordinator\n", "\n  serviceName: cohort-coordinator\n  strategy:\n    type: Recreate\n"},
		{"a Secret", "coordinator/configmap.yaml", "kind: ConfigMap", "kind: Secret"},
		{"kustomization: misspelled field", kust, "\nresources:\n", "\nresource:\n"},
		{"kustomization: field name in the wrong case", kust, "newTag: dev", "newtag: dev"},
		{"kustomization: string where a list is expected", kust, "\nresources:\n", "\nresources: all\nx:\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good, err := os.ReadFile(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := decode(good); err != nil {
				t.Fatalf("the unchanged %s: %v", tt.file, err)
			}
			if !bytes.Contains(good, []byte(tt.old)) {
				t.Fatalf("%s no longer contains %q: update the test", tt.file, tt.old)
			}
			bad := bytes.Replace(good, []byte(tt.old), []byte(tt.new), 1)
			if _, err := decode(bad); err == nil {
				t.Fatalf("decode accepted %s with %q replaced by %q", tt.file, tt.old, tt.new)
			} else {
				t.Logf("refused: %v", err)
			}
		})
	}
}

func TestSplitDocuments(t *testing.T) {
	in := "# header\n---\na: 1\n---   \n# only a comment\n\n---\nb: 2\nc: \"---\"\n"
	got := splitDocuments([]byte(in))
	want := []string{"a: 1\n", "b: 2\nc: \"---\"\n"}
	if len(got) != len(want) {
		t.Fatalf("got %d documents %q, want %q", len(got), got, want)
	}
	for i := range want {
		if string(got[i]) != want[i] {
			t.Errorf("document %d: %q, want %q", i, got[i], want[i])
		}
	}
}

func TestPods(t *testing.T) {
	ms := loadManifests(t)
	configMaps, cmFrom := objects[corev1.ConfigMap](ms)
	pvcs, _ := objects[corev1.PersistentVolumeClaim](ms)
	readme := readREADME(t)
	for _, w := range workloads(t, ms) {
		t.Run(w.String(), func(t *testing.T) {
			spec := &w.pod.Spec
			if !selects(t, w.selector, labels.Set(w.pod.Labels)) {
				t.Errorf("selector %v does not match the pod template's labels %v", w.selector, w.pod.Labels)
			}
			checkPodSecurity(t, spec)
			all := append(slices.Clone(spec.InitContainers), spec.Containers...)
			for i := range all {
				c := &all[i]
				checkContainerSecurity(t, c)
				checkVarRefs(t, c)
				if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
					t.Errorf("container %s: set cpu and memory requests and a memory limit", c.Name)
				}
			}
			for i := range spec.Containers {
				c := &spec.Containers[i]
				if !isCohort(c) {
					t.Errorf("container %s runs %s, not the Cohort image", c.Name, c.Image)
					continue
				}
				checkProbe(t, c, "readinessProbe", c.ReadinessProbe, "/readyz")
				checkProbe(t, c, "livenessProbe", c.LivenessProbe, "/healthz")
				if c.StartupProbe != nil {
					checkProbe(t, c, "startupProbe", c.StartupProbe, "/healthz")
				}
				if len(c.Command) > 0 {
					t.Errorf("container %s: command %q replaces the image's entrypoint /cohort; give the subcommand in args", c.Name, c.Command)
				}
				checkPrometheus(t, w, c)
			}
			checkVolumes(t, w, all, configMaps, cmFrom, pvcs, readme)
		})
	}
}

func checkPodSecurity(t *testing.T, spec *corev1.PodSpec) {
	t.Helper()
	sc := spec.SecurityContext
	if sc == nil {
		t.Error("no pod securityContext")
		return
	}
	if !deref(sc.RunAsNonRoot, false) {
		t.Error("pod securityContext: runAsNonRoot must be true")
	}
	if deref(sc.RunAsUser, 0) != cohortUID || deref(sc.RunAsGroup, 0) != cohortUID {
		t.Errorf("pod securityContext: runAsUser and runAsGroup must be %d, the image's user", cohortUID)
	}
	if deref(sc.FSGroup, 0) != cohortUID {
		t.Errorf("pod securityContext: fsGroup must be %d so that uid %d can write its data volume", cohortUID, cohortUID)
	}
	if deref(sc.FSGroupChangePolicy, corev1.FSGroupChangeAlways) != corev1.FSGroupChangeOnRootMismatch {
		t.Error("pod securityContext: fsGroupChangePolicy must be OnRootMismatch: with Always the kubelet adds group " +
			"read/write to every file of the data volume at each mount, and Cohort then refuses its own 0600 key files")
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("pod securityContext: seccompProfile must be RuntimeDefault")
	}
	if deref(spec.AutomountServiceAccountToken, true) {
		t.Error("automountServiceAccountToken must be false: Cohort does not talk to the Kubernetes API")
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Error("no host namespaces")
	}
}

// shells are commands that need a shell, which the Cohort image lacks;
// no container here uses one.
var shells = []string{"sh", "bash", "ash", "/bin/sh", "/bin/bash", "/bin/ash", "/usr/bin/env"}

func checkContainerSecurity(t *testing.T, c *corev1.Container) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil {
		t.Errorf("container %s: no securityContext", c.Name)
		return
	}
	if deref(sc.AllowPrivilegeEscalation, true) {
		t.Errorf("container %s: allowPrivilegeEscalation must be false", c.Name)
	}
	if !deref(sc.ReadOnlyRootFilesystem, false) {
		t.Errorf("container %s: readOnlyRootFilesystem must be true", c.Name)
	}
	if deref(sc.Privileged, false) {
		t.Errorf("container %s: privileged", c.Name)
	}
	if !deref(sc.RunAsNonRoot, true) || deref(sc.RunAsUser, cohortUID) == 0 {
		t.Errorf("container %s: must not run as root", c.Name)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		t.Errorf("container %s: capabilities must drop ALL and add none", c.Name)
	}
	if len(c.Command) > 0 && slices.Contains(shells, c.Command[0]) {
		t.Errorf("container %s: command %q needs a shell", c.Name, c.Command)
	}
}

var varRef = regexp.MustCompile(`\$\(([^)]*)\)`)

// checkVarRefs checks that every $(VAR) in the command and args names an
// env var of the container: Kubernetes leaves an unknown one as it is.
func checkVarRefs(t *testing.T, c *corev1.Container) {
	t.Helper()
	for _, arg := range append(slices.Clone(c.Command), c.Args...) {
		for _, m := range varRef.FindAllStringSubmatch(arg, -1) {
			if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == m[1] }) {
				t.Errorf("container %s: %q uses $(%s), which is not among its env vars", c.Name, arg, m[1])
			}
		}
	}
}

func checkProbe(t *testing.T, c *corev1.Container, name string, p *corev1.Probe, wantPath string) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("container %s: %s must be an httpGet of %s", c.Name, name, wantPath)
		return
	}
	if p.HTTPGet.Path != wantPath {
		t.Errorf("container %s: %s path %q, want %q", c.Name, name, p.HTTPGet.Path, wantPath)
	}
	if p.HTTPGet.Scheme != "" && p.HTTPGet.Scheme != corev1.URISchemeHTTP {
		t.Errorf("container %s: %s scheme %s: the status and metrics listeners are plain HTTP", c.Name, name, p.HTTPGet.Scheme)
	}
	if cp, ok := findPort(c, p.HTTPGet.Port); !ok {
		t.Errorf("container %s: %s port %s is not one of the container's ports", c.Name, name, p.HTTPGet.Port.String())
	} else if protocol(cp.Protocol) != corev1.ProtocolTCP {
		t.Errorf("container %s: %s port %s is %s, not TCP", c.Name, name, p.HTTPGet.Port.String(), cp.Protocol)
	}
}

// checkPrometheus checks the scrape annotations: the port is the one the
// probes use (the status or metrics listener) and the path is /metrics.
func checkPrometheus(t *testing.T, w workload, c *corev1.Container) {
	t.Helper()
	a := w.pod.Annotations
	if a["prometheus.io/scrape"] != "true" || a["prometheus.io/path"] != "/metrics" {
		t.Errorf("pod annotations: want prometheus.io/scrape \"true\" and prometheus.io/path /metrics, have %v", a)
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil {
		return
	}
	cp, ok := findPort(c, c.ReadinessProbe.HTTPGet.Port)
	if !ok {
		return
	}
	if want := fmt.Sprint(cp.ContainerPort); a["prometheus.io/port"] != want {
		t.Errorf("pod annotation prometheus.io/port %q, want %s, the port of /readyz and /metrics", a["prometheus.io/port"], want)
	}
}

// checkVolumes checks that every mount names a volume, every volume is
// mounted, every ConfigMap and PVC it names is defined (or, for a PVC the
// operator provides, explained in README.md), and that no Cohort container
// mounts a Secret: its files cannot be owner-only for uid 65532.
func checkVolumes(t *testing.T, w workload, containers []corev1.Container, cms []*corev1.ConfigMap, cmFrom []manifest, pvcs []*corev1.PersistentVolumeClaim, readme string) {
	t.Helper()
	spec := &w.pod.Spec
	vols := map[string]*corev1.Volume{}
	for i := range spec.Volumes {
		v := &spec.Volumes[i]
		if vols[v.Name] != nil {
			t.Errorf("volume %s is declared twice", v.Name)
		}
		vols[v.Name] = v
	}
	claims := map[string]bool{}
	for _, c := range w.claims {
		claims[c.Name] = true
		if vols[c.Name] != nil {
			t.Errorf("volume %s is both a pod volume and a volumeClaimTemplate", c.Name)
		}
	}
	mounted := map[string]bool{}
	for _, c := range containers {
		for _, vm := range c.VolumeMounts {
			mounted[vm.Name] = true
			v := vols[vm.Name]
			if v == nil && !claims[vm.Name] {
				t.Errorf("container %s mounts %s, which is neither a volume nor a volumeClaimTemplate", c.Name, vm.Name)
				continue
			}
			if v != nil && isCohort(&c) && (v.Secret != nil || v.Projected != nil) {
				t.Errorf("container %s mounts the Secret volume %s: Cohort refuses its key files (owned by root, "+
					"and group-readable with fsGroup); copy them with an init container", c.Name, vm.Name)
			}
		}
	}
	for name := range vols {
		if !mounted[name] {
			t.Errorf("volume %s is not mounted by any container", name)
		}
	}
	for name := range claims {
		if !mounted[name] {
			t.Errorf("volumeClaimTemplate %s is not mounted by any container", name)
		}
	}
	for _, v := range spec.Volumes {
		switch {
		case v.ConfigMap != nil:
			i := slices.IndexFunc(cms, func(cm *corev1.ConfigMap) bool {
				return cm.Name == v.ConfigMap.Name && cm.Namespace == w.meta.Namespace
			})
			if i < 0 {
				t.Errorf("volume %s: no ConfigMap %s/%s among the manifests", v.Name, w.meta.Namespace, v.ConfigMap.Name)
			} else if cmFrom[i].dir() != w.m.dir() {
				t.Errorf("volume %s: ConfigMap %s is in %s, not next to %s", v.Name, v.ConfigMap.Name, cmFrom[i].dir(), w.m.file)
			}
		case v.PersistentVolumeClaim != nil:
			name := v.PersistentVolumeClaim.ClaimName
			defined := slices.ContainsFunc(pvcs, func(p *corev1.PersistentVolumeClaim) bool {
				return p.Name == name && p.Namespace == w.meta.Namespace
			})
			if !defined && !strings.Contains(readme, name) {
				t.Errorf("volume %s: PersistentVolumeClaim %s is neither among the manifests nor explained in README.md", v.Name, name)
			}
		}
	}
}

// secretRefs returns the Secrets a workload's pods use, by name.
func secretRefs(w workload) []string {
	var names []string
	for _, v := range w.pod.Spec.Volumes {
		if v.Secret != nil {
			names = append(names, v.Secret.SecretName)
		}
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.Secret != nil {
					names = append(names, s.Secret.Name)
				}
			}
		}
	}
	for _, c := range append(slices.Clone(w.pod.Spec.InitContainers), w.pod.Spec.Containers...) {
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				names = append(names, e.ValueFrom.SecretKeyRef.Name)
			}
		}
		for _, e := range c.EnvFrom {
			if e.SecretRef != nil {
				names = append(names, e.SecretRef.Name)
			}
		}
	}
	return names
}

func readREADME(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var createSecret = regexp.MustCompile(`kubectl -n (\S+) create secret generic (\S+)`)

// TestSecretsDocumented checks that README.md shows how to create every
// Secret the pods use, in their namespace, and no other.
func TestSecretsDocumented(t *testing.T) {
	ms := loadManifests(t)
	used := map[string]bool{}
	for _, w := range workloads(t, ms) {
		for _, s := range secretRefs(w) {
			used[w.meta.Namespace+"/"+s] = true
		}
	}
	documented := map[string]bool{}
	for _, m := range createSecret.FindAllStringSubmatch(readREADME(t), -1) {
		documented[m[1]+"/"+m[2]] = true
	}
	for s := range used {
		if !documented[s] {
			t.Errorf("Secret %s is used but README.md has no `kubectl -n NAMESPACE create secret generic NAME` for it", s)
		}
	}
	for s := range documented {
		if !used[s] {
			t.Errorf("README.md creates Secret %s, which no pod uses", s)
		}
	}
	if len(used) == 0 {
		t.Error("no pod uses a Secret")
	}
}

func TestCoordinatorStatefulSet(t *testing.T) {
	ms := loadManifests(t)
	var sts *workload
	for _, w := range workloads(t, ms) {
		if w.sts != nil {
			sts = &w
		}
	}
	if sts == nil {
		t.Fatal("no StatefulSet")
	}
	s := sts.sts.Spec
	if sts.replicas < 3 || sts.replicas%2 == 0 {
		t.Errorf("replicas %d, want an odd number, at least 3 (a Raft majority survives a lost node)", sts.replicas)
	}
	if s.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Error("podManagementPolicy must be Parallel: no pod is ready before a leader is elected, which takes two pods")
	}
	if s.UpdateStrategy.Type != appsv1.RollingUpdateStatefulSetStrategyType {
		t.Errorf("updateStrategy %s, want RollingUpdate", s.UpdateStrategy.Type)
	}
	labelSet := labels.Set(sts.pod.Labels)

	// The headless Service that gives each pod its Raft DNS name.
	svcs, _ := objects[corev1.Service](ms)
	i := slices.IndexFunc(svcs, func(svc *corev1.Service) bool {
		return svc.Name == s.ServiceName && svc.Namespace == sts.meta.Namespace
	})
	if i < 0 {
		t.Fatalf("serviceName %s: no such Service", s.ServiceName)
	}
	headless := svcs[i]
	if headless.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("Service %s: clusterIP %q, want None (headless)", headless.Name, headless.Spec.ClusterIP)
	}
	if !headless.Spec.PublishNotReadyAddresses {
		t.Errorf("Service %s: publishNotReadyAddresses must be true: peers must find each other before any is ready", headless.Name)
	}
	if len(headless.Spec.Selector) == 0 || !labels.SelectorFromSet(headless.Spec.Selector).Matches(labelSet) {
		t.Errorf("Service %s: selector %v does not match the pods' labels %v", headless.Name, headless.Spec.Selector, labelSet)
	}

	// Anti-affinity: one coordinator per node.
	var anti bool
	if a := sts.pod.Spec.Affinity; a != nil && a.PodAntiAffinity != nil {
		for _, term := range a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			anti = anti || (term.TopologyKey == corev1.LabelHostname && selects(t, term.LabelSelector, labelSet))
		}
	}
	if !anti {
		t.Errorf("no required pod anti-affinity on %s selecting the coordinator pods", corev1.LabelHostname)
	}

	// The PodDisruptionBudget.
	pdbs, _ := objects[policyv1.PodDisruptionBudget](ms)
	var covered bool
	for _, p := range pdbs {
		if p.Namespace != sts.meta.Namespace || !selects(t, p.Spec.Selector, labelSet) {
			continue
		}
		covered = true
		majority := int(sts.replicas)/2 + 1
		switch {
		case p.Spec.MaxUnavailable != nil && p.Spec.MinAvailable == nil:
			if p.Spec.MaxUnavailable.Type != intstr.Int || p.Spec.MaxUnavailable.IntValue() != 1 {
				t.Errorf("PodDisruptionBudget %s: maxUnavailable %s, want 1", p.Name, p.Spec.MaxUnavailable.String())
			}
		case p.Spec.MinAvailable != nil && p.Spec.MaxUnavailable == nil:
			if p.Spec.MinAvailable.Type != intstr.Int || p.Spec.MinAvailable.IntValue() < majority {
				t.Errorf("PodDisruptionBudget %s: minAvailable %s, want at least %d (a majority)", p.Name, p.Spec.MinAvailable.String(), majority)
			}
		default:
			t.Errorf("PodDisruptionBudget %s: set exactly one of maxUnavailable and minAvailable", p.Name)
		}
	}
	if !covered {
		t.Error("no PodDisruptionBudget selects the coordinator pods")
	}

	// A persistent data volume per pod.
	if len(sts.claims) == 0 {
		t.Error("no volumeClaimTemplates: the Raft log must survive a pod's restart on another node")
	}
	for _, c := range sts.claims {
		if !slices.Contains(c.Spec.AccessModes, corev1.ReadWriteOnce) || c.Spec.Resources.Requests.Storage().IsZero() {
			t.Errorf("volumeClaimTemplate %s: want ReadWriteOnce and a storage request", c.Name)
		}
	}
}

func TestDeployment(t *testing.T) {
	ms := loadManifests(t)
	deps, _ := objects[appsv1.Deployment](ms)
	for _, d := range deps {
		if deref(d.Spec.Replicas, 1) != 1 {
			t.Errorf("Deployment %s: replicas %d, want 1: a site is one agent with one store", d.Name, *d.Spec.Replicas)
		}
		if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
			t.Errorf("Deployment %s: strategy %s, want Recreate: two pods must never open the same store", d.Name, d.Spec.Strategy.Type)
		}
	}
}

// TestServicesSelectPods checks that every Service selects pods of a
// workload and that its target ports are ports of those pods' container,
// with the same protocol.
func TestServicesSelectPods(t *testing.T) {
	ms := loadManifests(t)
	ws := workloads(t, ms)
	svcs, from := objects[corev1.Service](ms)
	for i, svc := range svcs {
		if len(svc.Spec.Selector) == 0 {
			t.Errorf("%s: Service %s has no selector", from[i], svc.Name)
			continue
		}
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		var matched []workload
		for _, w := range ws {
			if w.meta.Namespace == svc.Namespace && slices.ContainsFunc(w.podLabelSets(), func(s labels.Set) bool { return sel.Matches(s) }) {
				matched = append(matched, w)
			}
		}
		if len(matched) != 1 {
			t.Errorf("%s: Service %s selects the pods of %d workloads, want 1", from[i], svc.Name, len(matched))
			continue
		}
		spec := &matched[0].pod.Spec
		for _, p := range svc.Spec.Ports {
			target := p.TargetPort
			if target.Type == intstr.Int && target.IntVal == 0 {
				target = intstr.FromInt32(p.Port)
			}
			found := false
			for j := range spec.Containers {
				if cp, ok := findPort(&spec.Containers[j], target); ok {
					found = true
					if protocol(cp.Protocol) != protocol(p.Protocol) {
						t.Errorf("Service %s port %s: %s, but the container port is %s", svc.Name, p.Name, protocol(p.Protocol), protocol(cp.Protocol))
					}
				}
			}
			if !found {
				t.Errorf("Service %s port %s: target %s is not a port of %s", svc.Name, p.Name, target.String(), matched[0])
			}
		}
	}
}

// TestNetworkPolicies checks that every NetworkPolicy selects a workload's
// pods and lets in every port they serve, and that the agent's admits only
// its metrics port, from a named namespace, and lets out QUIC and DNS.
func TestNetworkPolicies(t *testing.T) {
	ms := loadManifests(t)
	ws := workloads(t, ms)
	nps, from := objects[networkingv1.NetworkPolicy](ms)
	for i, np := range nps {
		var w *workload
		for j := range ws {
			if ws[j].meta.Namespace == np.Namespace && selects(t, &np.Spec.PodSelector, labels.Set(ws[j].pod.Labels)) {
				w = &ws[j]
			}
		}
		if w == nil {
			t.Errorf("%s: NetworkPolicy %s selects no workload's pods", from[i], np.Name)
			continue
		}
		if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
			t.Errorf("NetworkPolicy %s: policyTypes must list Ingress and Egress", np.Name)
		}
		admitted := map[string]bool{}
		for _, r := range np.Spec.Ingress {
			for _, p := range r.Ports {
				if p.Port != nil {
					admitted[fmt.Sprint(protocol(deref(p.Protocol, corev1.ProtocolTCP)), "/", p.Port.String())] = true
				}
			}
		}
		for _, c := range w.pod.Spec.Containers {
			for _, cp := range c.Ports {
				if !admitted[fmt.Sprint(protocol(cp.Protocol), "/", cp.ContainerPort)] && !admitted[fmt.Sprint(protocol(cp.Protocol), "/", cp.Name)] {
					t.Errorf("NetworkPolicy %s: no ingress rule admits %s port %s (%d/%s)", np.Name, w, cp.Name, cp.ContainerPort, protocol(cp.Protocol))
				}
			}
		}
		var dns bool
		for _, r := range np.Spec.Egress {
			for _, p := range r.Ports {
				dns = dns || (deref(p.Protocol, corev1.ProtocolTCP) == corev1.ProtocolUDP && p.Port != nil && p.Port.IntValue() == 53)
			}
		}
		if !dns {
			t.Errorf("NetworkPolicy %s: no egress rule for DNS (UDP 53)", np.Name)
		}
		if w.sts != nil {
			continue
		}
		// The agent: nothing in but its metrics port, from a named namespace.
		for _, r := range np.Spec.Ingress {
			if len(r.From) == 0 || slices.ContainsFunc(r.From, func(p networkingv1.NetworkPolicyPeer) bool { return p.NamespaceSelector == nil || p.IPBlock != nil }) {
				t.Errorf("NetworkPolicy %s: ingress rule %v must come from a namespaceSelector only", np.Name, r.From)
			}
			if len(r.Ports) != 1 || r.Ports[0].Port == nil || !slices.ContainsFunc(w.pod.Spec.Containers, func(c corev1.Container) bool {
				cp, ok := findPort(&c, *r.Ports[0].Port)
				return ok && cp.Name == "metrics"
			}) {
				t.Errorf("NetworkPolicy %s: an ingress rule admits %v, want only the metrics port", np.Name, r.Ports)
			}
		}
		var quic bool
		for _, r := range np.Spec.Egress {
			for _, p := range r.Ports {
				quic = quic || (deref(p.Protocol, corev1.ProtocolTCP) == corev1.ProtocolUDP && p.Port != nil && p.Port.IntValue() == 7401)
			}
		}
		if !quic {
			t.Errorf("NetworkPolicy %s: no egress rule for QUIC to the coordinators (UDP 7401)", np.Name)
		}
	}
}

// TestKustomizations checks that each kustomization.yaml lists every
// manifest next to it, only files that exist, and images the pods use.
func TestKustomizations(t *testing.T) {
	ms := loadManifests(t)
	ks, from := objects[kustomization](ms)
	if len(ks) == 0 {
		t.Fatal("no kustomization.yaml")
	}
	ws := workloads(t, ms)
	for i, k := range ks {
		dir := from[i].dir()
		var files []string
		for _, m := range ms {
			if m.dir() == dir && path.Base(m.file) != "kustomization.yaml" && !slices.Contains(files, path.Base(m.file)) {
				files = append(files, path.Base(m.file))
			}
		}
		for _, f := range files {
			if !slices.Contains(k.Resources, f) {
				t.Errorf("%s: resources does not list %s", from[i], f)
			}
		}
		for _, r := range k.Resources {
			if !slices.Contains(files, r) {
				t.Errorf("%s: resource %s is not a manifest in %s", from[i], r, dir)
			}
		}
		var images []string
		for _, w := range ws {
			if w.m.dir() == dir {
				for _, c := range append(slices.Clone(w.pod.Spec.InitContainers), w.pod.Spec.Containers...) {
					images = append(images, imageName(c.Image))
				}
			}
		}
		for _, img := range k.Images {
			if !slices.Contains(images, img.Name) {
				t.Errorf("%s: image %s is used by no container in %s (they use %v)", from[i], img.Name, dir, images)
			}
		}
	}
}
