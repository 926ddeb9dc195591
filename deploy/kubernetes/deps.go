// Package kubernetes holds Cohort's Kubernetes manifests and the test that
// decodes each of them strictly into the Kubernetes API types.
package kubernetes

import (
	_ "k8s.io/api/apps/v1"   // StatefulSet, Deployment
	_ "k8s.io/api/core/v1"   // Service, ConfigMap, Secret
	_ "k8s.io/api/policy/v1" // PodDisruptionBudget
	_ "sigs.k8s.io/yaml"     // strict YAML decoding
)
