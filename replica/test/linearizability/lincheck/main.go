// Command lincheck checks a recorded key-value history for linearizability
// with Porcupine, partitioned by key.
//
//	lincheck [-timeout 60s] [-memory-max 2147483648] [-visualization out.html] [history.json | -]
//
// The history is a JSON array of operations as replica/test/linearizability
// records them. It prints one JSON object:
//
//	{"result": "ok"|"illegal"|"unknown"|"error", "operations": N,
//	 "partitions": N, "neverReturned": N, "elapsedMs": N,
//	 "stoppedBy": "timeout"|"memory" (when unknown),
//	 "visualization": "<HTML file, when illegal>", "error": "<when error>"}
//
// Exit status: 0 ok, 1 illegal, 2 error, 3 unknown (the check ran out of time
// or memory; no violation was found in what it explored).
//
// The check runs in two passes: a fast one that stops at the first violation,
// and, only for an illegal history, a verbose one that records the partial
// linearizations the visualization draws (it costs 3-10 times as much, so an
// ok history never pays for it). Each pass is bounded by -timeout.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// historyBytesMax bounds what is read, so a runaway recorder fails with a
// message instead of exhausting memory.
const historyBytesMax = 1 << 30

const (
	exitOk      = 0
	exitIllegal = 1
	exitError   = 2
	exitUnknown = 3
)

type report struct {
	Result        string  `json:"result"`
	Operations    int     `json:"operations"`
	Partitions    int     `json:"partitions"`
	NeverReturned int     `json:"neverReturned"`
	ElapsedMs     float64 `json:"elapsedMs"`
	StoppedBy     string  `json:"stoppedBy,omitempty"`
	Visualization string  `json:"visualization,omitempty"`
	Error         string  `json:"error,omitempty"`
}

var exitCodes = map[string]int{"ok": exitOk, "illegal": exitIllegal, "unknown": exitUnknown, "error": exitError}

// finish prints the one report and exits. The memory watchdog and the main
// flow may both get here; the first wins.
var finishOnce sync.Once

func finish(r report) {
	finishOnce.Do(func() {
		if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
			fmt.Fprintf(os.Stderr, "lincheck: writing the report: %v\n", err)
		}
		os.Exit(exitCodes[r.Result])
	})
	select {} // the other caller is exiting
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "lincheck: %v\n", err)
	finish(report{Result: "error", Error: err.Error()})
}

func milliseconds(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}

// Porcupine's memo of visited states has no bound of its own, and a history
// with many concurrent operations on one key can grow it by hundreds of MB a
// second: the watchdog stops the search before it takes the machine down.
type watchdog struct {
	mu      sync.Mutex
	pending report // what to say if memory runs out now
	started time.Time
}

func (w *watchdog) set(r report) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pending = r
}

func (w *watchdog) watch(limitBytes uint64) {
	// The runtime collects harder as the heap nears the limit, so that
	// garbage alone does not trip the watchdog.
	debug.SetMemoryLimit(int64(limitBytes))
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	for range time.Tick(50 * time.Millisecond) {
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 || sample[0].Value.Uint64() <= limitBytes {
			continue
		}
		w.mu.Lock()
		r := w.pending
		w.mu.Unlock()
		if r.Result == "illegal" {
			fmt.Fprintf(os.Stderr, "lincheck: no visualization: drawing it needed more than %d bytes\n", limitBytes)
		} else {
			r.Result = "unknown"
			r.StoppedBy = "memory"
			r.ElapsedMs = milliseconds(time.Since(w.started))
		}
		finish(r)
	}
}

func readHistory(path string) ([]historyEvent, error) {
	var input io.Reader = os.Stdin
	if path != "" && path != "-" {
		file, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer file.Close()
		input = file
	}
	data, err := io.ReadAll(io.LimitReader(input, historyBytesMax+1))
	if err != nil {
		return nil, fmt.Errorf("reading the history: %w", err)
	}
	if len(data) > historyBytesMax {
		return nil, fmt.Errorf("the history is larger than %d bytes: check it in parts (by key)", historyBytesMax)
	}
	var events []historyEvent
	if err := json.Unmarshal(data, &events); err != nil {
		return nil, fmt.Errorf("the history is not a JSON array of operations: %w", err)
	}
	return events, nil
}

func visualizationPath(requested string) (string, error) {
	if requested != "" {
		return requested, nil
	}
	file, err := os.CreateTemp("", "lincheck-*.html")
	if err != nil {
		return "", err
	}
	path := file.Name()
	return path, file.Close()
}

func run() {
	timeout := flag.Duration("timeout", 60*time.Second, "bound on each pass of the check; when it runs out the result is \"unknown\" (0: no limit)")
	memoryMax := flag.Uint64("memory-max", 2<<30, "heap bytes the search may use; beyond, the result is \"unknown\"")
	visualization := flag.String("visualization", "", "where to write the HTML visualization of an illegal history (default: a new temporary file)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: lincheck [flags] [history.json | -]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 1 {
		flag.Usage()
		fail(errors.New("at most one history file may be given"))
	}
	if *timeout < 0 {
		fail(errors.New("-timeout must not be negative"))
	}
	if *memoryMax == 0 || *memoryMax > math.MaxInt64 {
		fail(errors.New("-memory-max must be a positive number of bytes below 2^63"))
	}
	events, err := readHistory(flag.Arg(0))
	if err != nil {
		fail(err)
	}
	history, err := buildHistory(events)
	if err != nil {
		fail(err)
	}
	out := report{
		Operations:    len(history.operations),
		Partitions:    history.partitions,
		NeverReturned: history.neverReturned,
	}
	guard := &watchdog{pending: out, started: time.Now()}
	go guard.watch(*memoryMax)

	started := time.Now()
	result := porcupine.CheckOperationsTimeout(kvModel, history.operations, *timeout)
	out.ElapsedMs = milliseconds(time.Since(started))
	switch result {
	case porcupine.Ok:
		out.Result = "ok"
		finish(out)
	case porcupine.Unknown:
		out.Result = "unknown"
		out.StoppedBy = "timeout"
		finish(out)
	case porcupine.Illegal:
		out.Result = "illegal"
	default:
		fail(fmt.Errorf("porcupine returned an unexpected result %q", result))
	}

	guard.set(out)
	verbose, info := porcupine.CheckOperationsVerbose(kvModel, history.operations, *timeout)
	if verbose != porcupine.Illegal {
		// Out of time: the verdict of the first pass stands, without a picture.
		fmt.Fprintf(os.Stderr, "lincheck: no visualization: the verbose pass ended %s\n", verbose)
		finish(out)
	}
	path, err := visualizationPath(*visualization)
	if err == nil {
		err = porcupine.VisualizePath(kvModel, info, path)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "lincheck: writing the visualization: %v\n", err)
	} else {
		out.Visualization = path
	}
	finish(out)
}

func main() {
	run()
}
