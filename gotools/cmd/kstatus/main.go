// Command kstatus reads one Kubernetes object as JSON (or YAML) on stdin and
// prints the status kstatus computes for it, as JSON:
//
//	{"status":"Current","message":"Resource is Ready"}
//
// It is the same library (sigs.k8s.io/cli-utils/pkg/kstatus/status) that
// Flux, kpt and cli-utils' apply use to decide whether an object is done.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

type result struct {
	Status     string             `json:"status"`
	Message    string             `json:"message"`
	Conditions []status.Condition `json:"conditions,omitempty"`
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	raw, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	data, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return fmt.Errorf("reading the object: %w", err)
	}
	// UnmarshalJSON keeps integers as int64, which kstatus expects of generations.
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(data); err != nil {
		return fmt.Errorf("reading the object: %w", err)
	}
	res, err := status.Compute(obj)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(out)
	return enc.Encode(result{Status: res.Status.String(), Message: res.Message, Conditions: res.Conditions})
}
