// kubecheck decodes Kubernetes manifests strictly against the API types, offline.
//
// Usage: kubecheck [--crd CRD-FILE]... [FILE...]   (standard input when no FILE is given)
//
// Every YAML document must be an object of a kind this program knows and must hold no unknown
// and no duplicate field:
//   - the built-in API groups of k8s.io/api, cert-manager's Certificate and prometheus-operator's
//     ServiceMonitor decode strictly into their Go types;
//   - kinds defined by a CustomResourceDefinition given with --crd (external-secrets.io's
//     ExternalSecret: its Go module does not build against these Kubernetes libraries) are
//     checked against the CRD's own structural schema, as the API server would: fields the
//     schema does not know (which a server would prune silently) and schema violations fail. Each document is reported on standard output as "ok <apiVersion> <kind>
//
// <name>" or on standard error with the reason; the exit status is 1 when any document failed, 2
// on a usage or read error. The chart tests (tests/e2e/test_helm.py) run it on `helm template`
// output, so that a typo in a template (a misspelled field, a field at the wrong level) fails
// the tests instead of being pruned silently by a server.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	certmanagerv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	apiextensionsinternal "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apivalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

func newScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme,
		certmanagerv1.AddToScheme,
		monitoringv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// blank reports whether a YAML document holds nothing but comments and white space (helm
// emits such documents for templates whose condition is false).
func blank(doc []byte) bool {
	sc := bufio.NewScanner(bytes.NewReader(doc))
	sc.Buffer(make([]byte, 0, 64*1024), len(doc)+1)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			return false
		}
	}
	return true
}

type meta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
}

// crdSchema is one served version of a CustomResourceDefinition, ready to check objects.
type crdSchema struct {
	structural *structuralschema.Structural
	validator  apivalidation.SchemaValidator
}

// loadCRDs reads CustomResourceDefinitions (strictly) and indexes their versions' schemas by
// "apiVersion kind".
func loadCRDs(paths []string) (map[string]crdSchema, error) {
	out := map[string]crdSchema{}
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := reader.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			if blank(doc) {
				continue
			}
			var crd apiextensionsv1.CustomResourceDefinition
			if err := yaml.UnmarshalStrict(doc, &crd); err != nil {
				return nil, fmt.Errorf("%s: not a CustomResourceDefinition: %w", path, err)
			}
			if crd.Kind != "CustomResourceDefinition" {
				return nil, fmt.Errorf("%s: a %q, not a CustomResourceDefinition", path, crd.Kind)
			}
			for _, v := range crd.Spec.Versions {
				if v.Schema == nil || v.Schema.OpenAPIV3Schema == nil {
					return nil, fmt.Errorf("%s: version %s has no schema", path, v.Name)
				}
				var internal apiextensionsinternal.JSONSchemaProps
				if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(v.Schema.OpenAPIV3Schema, &internal, nil); err != nil {
					return nil, fmt.Errorf("%s: version %s: %w", path, v.Name, err)
				}
				structural, err := structuralschema.NewStructural(&internal)
				if err != nil {
					return nil, fmt.Errorf("%s: version %s: %w", path, v.Name, err)
				}
				validator, _, err := apivalidation.NewSchemaValidator(&internal)
				if err != nil {
					return nil, fmt.Errorf("%s: version %s: %w", path, v.Name, err)
				}
				key := crd.Spec.Group + "/" + v.Name + " " + crd.Spec.Names.Kind
				out[key] = crdSchema{structural: structural, validator: validator}
			}
		}
	}
	return out, nil
}

// checkCustom checks one object against its CRD's schema: no field the schema would prune, and
// no violation of the schema.
func checkCustom(doc []byte, schema crdSchema) error {
	var obj map[string]interface{}
	if err := yaml.Unmarshal(doc, &obj); err != nil {
		return err
	}
	unknown := pruning.PruneWithOptions(obj, schema.structural, true,
		structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	if len(unknown) > 0 {
		return fmt.Errorf("strict decoding error: unknown field(s) %s", strings.Join(unknown, ", "))
	}
	if errs := apivalidation.ValidateCustomResource(field.NewPath(""), obj, schema.validator); len(errs) > 0 {
		return errs.ToAggregate()
	}
	return nil
}

func checkStream(name string, r io.Reader, decode runtime.Decoder, crds map[string]crdSchema) (int, int, error) {
	docs, failed := 0, 0
	reader := utilyaml.NewYAMLReader(bufio.NewReader(r))
	for index := 1; ; index++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return docs, failed, nil
		}
		if err != nil {
			return docs, failed, fmt.Errorf("%s: document %d: %w", name, index, err)
		}
		if blank(doc) {
			continue
		}
		docs++
		var m meta
		if err := yaml.Unmarshal(doc, &m); err != nil {
			failed++
			fmt.Fprintf(os.Stderr, "%s: document %d: not a YAML object: %v\n", name, index, err)
			continue
		}
		if m.Metadata.Name == "" {
			failed++
			fmt.Fprintf(os.Stderr, "%s: document %d (%s %s): metadata.name is missing\n", name, index, m.APIVersion, m.Kind)
			continue
		}
		if schema, ok := crds[m.APIVersion+" "+m.Kind]; ok {
			err = checkCustom(doc, schema)
		} else {
			_, _, err = decode.Decode(doc, nil, nil)
		}
		if err != nil {
			failed++
			fmt.Fprintf(os.Stderr, "%s: document %d (%s %s %s): %v\n", name, index, m.APIVersion, m.Kind, m.Metadata.Name, err)
			continue
		}
		fmt.Printf("ok %s %s %s\n", m.APIVersion, m.Kind, m.Metadata.Name)
	}
}

func main() {
	scheme, err := newScheme()
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubecheck: %v\n", err)
		os.Exit(2)
	}
	decode := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
	var files, crdFiles []string
	args := os.Args[1:]
	for i := 0; i < len(args); i++ {
		switch {
		case args[i] == "--crd" && i+1 < len(args):
			crdFiles = append(crdFiles, args[i+1])
			i++
		case strings.HasPrefix(args[i], "-"):
			fmt.Println("usage: kubecheck [--crd CRD-FILE]... [FILE...]  (every document strictly; stdin without FILE)")
			os.Exit(2)
		default:
			files = append(files, args[i])
		}
	}
	crds, err := loadCRDs(crdFiles)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubecheck: %v\n", err)
		os.Exit(2)
	}
	total, failed := 0, 0
	check := func(name string, r io.Reader) {
		d, f, err := checkStream(name, r, decode, crds)
		total, failed = total+d, failed+f
		if err != nil {
			fmt.Fprintf(os.Stderr, "kubecheck: %v\n", err)
			os.Exit(2)
		}
	}
	if len(files) == 0 {
		check("<stdin>", os.Stdin)
	}
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kubecheck: %v\n", err)
			os.Exit(2)
		}
		check(path, f)
		f.Close()
	}
	if total == 0 {
		fmt.Fprintln(os.Stderr, "kubecheck: no documents")
		os.Exit(1)
	}
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "kubecheck: %d of %d documents failed\n", failed, total)
		os.Exit(1)
	}
}
