// composecheck loads compose files the way Docker Compose does (compose-go: YAML, includes,
// interpolation, the compose specification's JSON schema, then the model's own consistency
// checks) and prints the resolved services, offline. It runs no container.
//
// Usage: composecheck [--env-file FILE] FILE...
//
// Exit status 0 when the project loads, 1 with the loader's error otherwise, 2 on a usage error.
// The compose tests (tests/e2e/test_compose.py) run it on compose/compose.yaml.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/compose-spec/compose-go/v2/cli"
)

type service struct {
	Name      string   `json:"name"`
	Image     string   `json:"image,omitempty"`
	Context   string   `json:"build_context,omitempty"`
	File      string   `json:"dockerfile,omitempty"`
	Target    string   `json:"target,omitempty"`
	Args      []string `json:"build_args,omitempty"`
	DependsOn []string `json:"depends_on,omitempty"`
	User      string   `json:"user,omitempty"`
	ReadOnly  bool     `json:"read_only"`
	Ports     []string `json:"ports,omitempty"`
	Env       []string `json:"environment,omitempty"`
}

func main() {
	args := os.Args[1:]
	var envFiles, files []string
	for i := 0; i < len(args); i++ {
		switch {
		case args[i] == "--env-file" && i+1 < len(args):
			envFiles = append(envFiles, args[i+1])
			i++
		case len(args[i]) > 0 && args[i][0] == '-':
			fmt.Fprintln(os.Stderr, "usage: composecheck [--env-file FILE] FILE...")
			os.Exit(2)
		default:
			files = append(files, args[i])
		}
	}
	if len(files) == 0 {
		fmt.Fprintln(os.Stderr, "usage: composecheck [--env-file FILE] FILE...")
		os.Exit(2)
	}
	opts, err := cli.NewProjectOptions(files,
		cli.WithEnvFiles(envFiles...), cli.WithDotEnv, cli.WithOsEnv,
		cli.WithConsistency(true), cli.WithResolvedPaths(true), cli.WithInterpolation(true))
	if err != nil {
		fmt.Fprintf(os.Stderr, "composecheck: %v\n", err)
		os.Exit(1)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintf(os.Stderr, "composecheck: %v\n", err)
		os.Exit(1)
	}
	var out []service
	for name, s := range project.Services {
		v := service{Name: name, Image: s.Image, User: s.User, ReadOnly: s.ReadOnly}
		if s.Build != nil {
			v.Context, v.File, v.Target = s.Build.Context, s.Build.Dockerfile, s.Build.Target
			for k, val := range s.Build.Args {
				if val != nil {
					v.Args = append(v.Args, k+"="+*val)
				}
			}
			sort.Strings(v.Args)
		}
		for dep := range s.DependsOn {
			v.DependsOn = append(v.DependsOn, dep)
		}
		sort.Strings(v.DependsOn)
		for _, p := range s.Ports {
			v.Ports = append(v.Ports, fmt.Sprintf("%s:%s->%d/%s", p.HostIP, p.Published, p.Target, p.Protocol))
		}
		for k := range s.Environment {
			v.Env = append(v.Env, k)
		}
		sort.Strings(v.Env)
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(map[string]any{"name": project.Name, "services": out}); err != nil {
		fmt.Fprintf(os.Stderr, "composecheck: %v\n", err)
		os.Exit(1)
	}
}
