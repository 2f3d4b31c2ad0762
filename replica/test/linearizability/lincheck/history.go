package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"

	"github.com/anishathalye/porcupine"
)

// nanos is a monotonic timestamp in nanoseconds. The recorder writes it as a
// decimal string because JSON numbers lose precision above 2^53 ns (104 days
// of uptime); a plain number is accepted too.
type nanos int64

func (n *nanos) UnmarshalJSON(data []byte) error {
	text := string(bytes.TrimSpace(data))
	if unquoted, err := strconv.Unquote(text); err == nil {
		text = unquoted
	}
	value, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		return fmt.Errorf("timestamp %s is not an integer number of nanoseconds", string(data))
	}
	*n = nanos(value)
	return nil
}

// historyEvent is one operation as the TypeScript HistoryRecorder writes it.
type historyEvent struct {
	ClientID string          `json:"clientId"`
	Kind     string          `json:"kind"`
	Key      *string         `json:"key"`
	Value    *string         `json:"value"`
	Expected json.RawMessage `json:"expected"`
	Output   json.RawMessage `json:"output"`
	CallNs   *nanos          `json:"callNs"`
	ReturnNs *nanos          `json:"returnNs"`
}

type parsedHistory struct {
	operations    []porcupine.Operation
	partitions    int
	neverReturned int
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(bytes.TrimSpace(raw)) == "null"
}

// optionalString decodes a string-or-null field; a missing field is an error
// because absent and "forgotten" must not be confused.
func optionalString(raw json.RawMessage, field string) (present bool, value string, err error) {
	if len(raw) == 0 {
		return false, "", fmt.Errorf("%s is missing (use null for an absent key)", field)
	}
	if isNull(raw) {
		return false, "", nil
	}
	if err := json.Unmarshal(raw, &value); err != nil {
		return false, "", fmt.Errorf("%s must be a string or null", field)
	}
	return true, value, nil
}

func toOperation(event historyEvent) (porcupine.Operation, bool, error) {
	var in kvInput
	var out kvOutput
	if event.ClientID == "" {
		return porcupine.Operation{}, false, fmt.Errorf("clientId is missing")
	}
	if event.Key == nil {
		return porcupine.Operation{}, false, fmt.Errorf("key is missing")
	}
	if event.CallNs == nil {
		return porcupine.Operation{}, false, fmt.Errorf("callNs is missing")
	}
	in.key = *event.Key
	returned := event.ReturnNs != nil
	if returned && *event.ReturnNs < *event.CallNs {
		return porcupine.Operation{}, false, fmt.Errorf("returnNs %d is before callNs %d", *event.ReturnNs, *event.CallNs)
	}
	out.unknown = !returned
	needValue := func() error {
		if event.Value == nil {
			return fmt.Errorf("%s needs a string value", event.Kind)
		}
		in.value = *event.Value
		return nil
	}
	switch event.Kind {
	case "put":
		in.kind = opPut
		if err := needValue(); err != nil {
			return porcupine.Operation{}, false, err
		}
	case "delete":
		in.kind = opDelete
	case "get":
		in.kind = opGet
		if returned {
			found, value, err := optionalString(event.Output, "output of a returned get")
			if err != nil {
				return porcupine.Operation{}, false, err
			}
			out.found, out.value = found, value
		}
	case "cas":
		in.kind = opCas
		if err := needValue(); err != nil {
			return porcupine.Operation{}, false, err
		}
		present, expected, err := optionalString(event.Expected, "expected of a cas")
		if err != nil {
			return porcupine.Operation{}, false, err
		}
		in.expectedPresent, in.expected = present, expected
		if returned {
			if isNull(event.Output) || json.Unmarshal(event.Output, &out.swapped) != nil {
				return porcupine.Operation{}, false, fmt.Errorf("output of a returned cas must be true or false")
			}
		}
	default:
		return porcupine.Operation{}, false, fmt.Errorf("kind %q is not put, get, delete or cas", event.Kind)
	}
	op := porcupine.Operation{
		Input:    in,
		Call:     int64(*event.CallNs),
		Output:   out,
		Metadata: event.ClientID,
	}
	if returned {
		op.Return = int64(*event.ReturnNs)
	}
	return op, returned, nil
}

// buildHistory turns recorded events into Porcupine operations.
//
// An operation that never returned gets a return time after every other event,
// so the checker may place it anywhere after its call, the end included (where
// it is indistinguishable from not having happened), and the model accepts
// any outcome for it. This is Porcupine's way of handling Jepsen's "info"
// operations. A get that never returned is dropped: it changes no state and
// constrains nothing, and keeping it open to the end only widens the search.
func buildHistory(events []historyEvent) (parsedHistory, error) {
	var result parsedHistory
	operations := make([]porcupine.Operation, 0, len(events))
	clientIDs := make([]string, 0, len(events))
	pending := make([]bool, 0, len(events))
	latest := int64(math.MinInt64)
	keys := make(map[string]struct{})
	for index, event := range events {
		op, returned, err := toOperation(event)
		if err != nil {
			return result, fmt.Errorf("event %d: %w", index, err)
		}
		latest = max(latest, op.Call, op.Return)
		if !returned {
			result.neverReturned++
			if op.Input.(kvInput).kind == opGet {
				continue
			}
		}
		keys[op.Input.(kvInput).key] = struct{}{}
		operations = append(operations, op)
		clientIDs = append(clientIDs, event.ClientID)
		pending = append(pending, !returned)
	}
	if latest == math.MaxInt64 {
		return result, fmt.Errorf("a timestamp is at the largest int64, leaving no room for never-returned operations")
	}
	for index := range operations {
		if pending[index] {
			operations[index].Return = latest + 1
		}
	}
	assignLanes(operations, clientIDs)
	result.operations = operations
	result.partitions = len(keys)
	return result, nil
}

// assignLanes gives Porcupine the dense, zero-based ClientId its visualization
// draws as rows. A row must hold one operation at a time, but a client that
// timed out moves on while its old request stays open (as Jepsen gives such a
// process a new number), and a client may pipeline: each client therefore gets
// as many rows as it has overlapping operations.
func assignLanes(operations []porcupine.Operation, clientIDs []string) {
	order := make([]int, len(operations))
	for index := range order {
		order[index] = index
	}
	sort.SliceStable(order, func(a, b int) bool {
		left, right := order[a], order[b]
		if clientIDs[left] != clientIDs[right] {
			return clientIDs[left] < clientIDs[right]
		}
		return operations[left].Call < operations[right].Call
	})
	type lane struct {
		id        int
		busyUntil int64
	}
	lanesByClient := make(map[string][]lane)
	nextLane := 0
	for _, index := range order {
		client := clientIDs[index]
		lanes := lanesByClient[client]
		chosen := -1
		for position := range lanes {
			// Intervals are closed: a lane is free only strictly after its last return.
			if lanes[position].busyUntil < operations[index].Call {
				chosen = position
				break
			}
		}
		if chosen < 0 {
			lanes = append(lanes, lane{id: nextLane})
			nextLane++
			chosen = len(lanes) - 1
		}
		lanes[chosen].busyUntil = operations[index].Return
		operations[index].ClientId = lanes[chosen].id
		lanesByClient[client] = lanes
	}
}
