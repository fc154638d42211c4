package scenarios

import (
	"fmt"
	"strings"
)

// MismatchError says that one or more checks saw mail go somewhere the plan did not
// expect. It is the only error that means "the target is wrong" (exit code 1).
type MismatchError struct {
	// Failed names each failed check, e.g. "route bob@example.org: want source, got local".
	Failed []string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("%d check(s) failed: %s", len(e.Failed), strings.Join(e.Failed, "; "))
}
