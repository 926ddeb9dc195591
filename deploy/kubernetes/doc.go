// Package kubernetes holds Cohort's Kubernetes manifests (coordinator/ for
// the Raft-replicated coordinator cluster, agent/ for a hospital's site
// agent) and the test that decodes each of them strictly into the
// Kubernetes API types, has the cohort binary read the Cohort configs they
// carry with each pod's flags (`cohort coordinator|agent --check-config`),
// and checks what the cluster needs beyond syntax. See
// README.md for how to deploy them.
package kubernetes
