//go:build tools

// Package tools records the commands this module builds so that go.mod and
// go.sum hold everything they need.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
