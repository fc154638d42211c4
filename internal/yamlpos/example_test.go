package yamlpos_test

import (
	"fmt"

	"github.com/splitcheck/splitcheck/internal/yamlpos"
)

func Example() {
	line, msg := yamlpos.Split("yaml: line 3: did not find expected key")
	fmt.Println(yamlpos.Format("run.yaml", line, "", msg))
	fmt.Println(yamlpos.Format("run.yaml", 18, "fakes.source", "not host:port"))
	// Output:
	// run.yaml:3: did not find expected key
	// run.yaml:18: field fakes.source: not host:port
}
