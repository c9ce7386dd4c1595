// Package kubernetes checks the manifests in this directory against the
// Kubernetes API types: each document strict-decodes (an unknown or
// misspelt field fails) and the pieces fit together — the headless
// Service selects the Deployment's pods and targets its agent port, the
// probes are grpc probes on the health port, and the token comes from the
// Secret at the path the command is told.
package kubernetes

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

type manifests struct {
	deploy  *appsv1.Deployment
	service *corev1.Service
	secret  *corev1.Secret
	hpa     *autoscalingv2.HorizontalPodAutoscaler
}

func load(t *testing.T) manifests {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests found: %v", err)
	}
	var m manifests
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range bytes.Split(raw, []byte("\n---")) {
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			var meta struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("%s #%d: %v", f, i, err)
			}
			var into any
			switch meta.APIVersion + "/" + meta.Kind {
			case "apps/v1/Deployment":
				m.deploy = &appsv1.Deployment{}
				into = m.deploy
			case "v1/Service":
				m.service = &corev1.Service{}
				into = m.service
			case "v1/Secret":
				m.secret = &corev1.Secret{}
				into = m.secret
			case "autoscaling/v2/HorizontalPodAutoscaler":
				m.hpa = &autoscalingv2.HorizontalPodAutoscaler{}
				into = m.hpa
			default:
				t.Fatalf("%s #%d: unexpected %s %s", f, i, meta.APIVersion, meta.Kind)
			}
			if err := yaml.UnmarshalStrict(doc, into); err != nil {
				t.Fatalf("%s #%d (%s): %v", f, i, meta.Kind, err)
			}
		}
	}
	if m.deploy == nil || m.service == nil || m.secret == nil {
		t.Fatal("want a Deployment, a Service and a Secret")
	}
	return m
}

// The HPA scales the agents' Deployment on the hosts' queue wait, the
// metric snakepit exports under that name (metrics.go).
func TestHPAScalesTheAgentsOnQueueWait(t *testing.T) {
	m := load(t)
	h := m.hpa
	if h == nil {
		t.Fatal("want a HorizontalPodAutoscaler (hpa.yaml)")
	}
	ref := h.Spec.ScaleTargetRef
	if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || ref.Name != m.deploy.Name {
		t.Errorf("the HPA targets %s %s %q, not the agents' Deployment %q", ref.APIVersion, ref.Kind, ref.Name, m.deploy.Name)
	}
	if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 1 || h.Spec.MaxReplicas < *h.Spec.MinReplicas {
		t.Errorf("replicas %v..%d: want 1 <= min <= max", h.Spec.MinReplicas, h.Spec.MaxReplicas)
	}
	if len(h.Spec.Metrics) != 1 || h.Spec.Metrics[0].External == nil || h.Spec.Metrics[0].External.Metric.Name != "snakepit_queue_wait_seconds" {
		t.Fatalf("want one External metric snakepit_queue_wait_seconds, got %+v", h.Spec.Metrics)
	}
	// The shipped hosts feed their default pool from the agents: its wait is the agents'.
	if sel := h.Spec.Metrics[0].External.Metric.Selector; sel == nil || sel.MatchLabels["pool"] != "default" {
		t.Errorf("want the metric selected by pool=default (the pool agents join), got %+v", sel)
	}
	if tg := h.Spec.Metrics[0].External.Target; tg.Type != autoscalingv2.ValueMetricType || tg.Value == nil || tg.Value.Sign() <= 0 {
		t.Errorf("want a positive Value target (seconds of wait), got %+v", tg)
	}
}

func TestManifestsFitTogether(t *testing.T) {
	m := load(t)
	d, svc, sec := m.deploy, m.service, m.secret
	pod := d.Spec.Template

	sel := labels.SelectorFromSet(d.Spec.Selector.MatchLabels)
	if !sel.Matches(labels.Set(pod.Labels)) {
		t.Errorf("the Deployment's selector %v does not match its pod labels %v", d.Spec.Selector.MatchLabels, pod.Labels)
	}
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("the Service must be headless (clusterIP: None), got %q", svc.Spec.ClusterIP)
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(pod.Labels)) {
		t.Errorf("the Service selector %v does not select the pods %v", svc.Spec.Selector, pod.Labels)
	}

	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for _, sp := range svc.Spec.Ports {
		if _, ok := ports[sp.TargetPort.String()]; !ok && sp.TargetPort.IntValue() == 0 {
			t.Errorf("Service port %s targets %q, which the container does not name", sp.Name, sp.TargetPort.String())
		}
	}
	if ports["agent"] == 0 || ports["health"] == 0 {
		t.Fatalf("container ports %v: want named agent and health ports", ports)
	}

	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Fatalf("container args %v: want `snakepit serve ...`", c.Args)
	}
	flag := func(name string) (string, bool) {
		for _, a := range c.Args {
			if a == "--"+name {
				return "", true
			}
			if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
				return v, true
			}
		}
		return "", false
	}
	if _, ok := flag("allow-non-loopback"); !ok {
		t.Error("a pod's agent must listen beyond loopback: --allow-non-loopback is missing")
	}
	for name, port := range map[string]int32{"listen": ports["agent"], "health-listen": ports["health"]} {
		v, ok := flag(name)
		if !ok || !strings.HasSuffix(v, ":"+itoa(port)) {
			t.Errorf("--%s=%q does not serve container port %d", name, v, port)
		}
	}

	for what, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
		if p == nil || p.GRPC == nil {
			t.Errorf("%s probe: want a grpc probe", what)
			continue
		}
		if p.GRPC.Port != ports["health"] {
			t.Errorf("%s probe on port %d, want the plaintext health port %d", what, p.GRPC.Port, ports["health"])
		}
	}
	if p := c.LivenessProbe; p != nil && p.GRPC != nil && (p.GRPC.Service == nil || *p.GRPC.Service != "liveness") {
		t.Error(`the liveness probe must ask for service "liveness" (SERVING while the agent runs), not readiness`)
	}
	if p := c.ReadinessProbe; p != nil && p.GRPC != nil && p.GRPC.Service != nil && *p.GRPC.Service != "" {
		t.Errorf("the readiness probe asks for service %q; want the default service (SERVING while a worker is ready)", *p.GRPC.Service)
	}

	tokenPath, ok := flag("token-file")
	if !ok {
		t.Fatal("--token-file is missing")
	}
	var secretVol string
	for _, v := range pod.Spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == sec.Name {
			secretVol = v.Name
		}
	}
	if secretVol == "" {
		t.Fatalf("no volume mounts Secret %s", sec.Name)
	}
	mounted := false
	for _, vm := range c.VolumeMounts {
		if vm.Name == secretVol && filepath.Dir(tokenPath) == filepath.Clean(vm.MountPath) {
			key := filepath.Base(tokenPath)
			_, inData := sec.Data[key]
			_, inString := sec.StringData[key]
			if !inData && !inString {
				t.Errorf("--token-file reads key %q, which Secret %s does not hold", key, sec.Name)
			}
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("--token-file=%s is not inside the mount of Secret %s", tokenPath, sec.Name)
	}

	var grace int64
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		grace = *pod.Spec.TerminationGracePeriodSeconds
	}
	if grace < 20 {
		t.Errorf("terminationGracePeriodSeconds %d: want room for the drain and the App's ordered stop", grace)
	}
}

func TestDockerfileBuildsTheCommand(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{"./cmd/snakepit", "python3-grpcio", "python3-protobuf", `"/usr/local/bin/snakepit"]`, "tini", "USER "} {
		if !strings.Contains(s, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if !slices.ContainsFunc(strings.Split(s, "\n"), func(l string) bool { return strings.HasPrefix(l, "EXPOSE") && strings.Contains(l, "7070") }) {
		t.Error("Dockerfile does not EXPOSE the agent port 7070")
	}
}

func itoa(n int32) string {
	var b [12]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}
