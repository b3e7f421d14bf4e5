// composecheck loads a Compose file with compose-go, the loader of Docker
// Compose itself: YAML, interpolation (${VAR:?message} included), the
// compose-spec JSON schema, extends/anchors/merge keys, and the project's
// consistency checks (depends_on, networks, volumes, profiles). On success it
// prints the resolved project as JSON; on error it prints the error and exits
// with status 1.
//
//	composecheck -f compose.yaml [-env-file .env] [-profile gpu]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var files, envFiles, profiles list
	flag.Var(&files, "f", "compose file (repeatable)")
	flag.Var(&envFiles, "env-file", "env file (repeatable; default: .env next to the file)")
	flag.Var(&profiles, "profile", "profile to enable (repeatable)")
	flag.Parse()
	if len(files) == 0 {
		fmt.Fprintln(os.Stderr, "composecheck: -f FILE is required")
		os.Exit(2)
	}
	opts, err := cli.NewProjectOptions(
		files,
		cli.WithWorkingDirectory(filepath.Dir(files[0])),
		cli.WithOsEnv,
		cli.WithEnvFiles(envFiles...),
		cli.WithDotEnv,
		cli.WithProfiles(profiles),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "composecheck:", err)
		os.Exit(1)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "composecheck:", err)
		os.Exit(1)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fmt.Fprintln(os.Stderr, "composecheck:", err)
		os.Exit(1)
	}
	os.Stdout.Write(out)
	fmt.Println()
}
