package main

import (
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"

	"github.com/anishathalye/porcupine"
)

type opKind uint8

const (
	opPut opKind = iota
	opGet
	opDelete
	opCas
)

type kvInput struct {
	kind            opKind
	key             string
	value           string // put and cas: the value written
	expected        string // cas: the value required beforehand
	expectedPresent bool   // cas: false requires the key to be absent
}

type kvOutput struct {
	// unknown marks an operation that never returned: it may or may not have
	// taken effect, and whatever it would have returned is unconstrained.
	unknown bool
	found   bool   // get
	value   string // get, when found
	swapped bool   // cas
}

// kvState is the state of one key; the model is partitioned by key, so a
// partition's state never needs the whole map.
type kvState struct {
	present bool
	value   string
}

func (s kvState) matches(present bool, value string) bool {
	return s.present == present && (!present || s.value == value)
}

func kvStep(state, input, output interface{}) (bool, interface{}) {
	st := state.(kvState)
	in := input.(kvInput)
	out := output.(kvOutput)
	switch in.kind {
	case opPut:
		return true, kvState{present: true, value: in.value}
	case opDelete:
		return true, kvState{}
	case opGet:
		return out.unknown || st.matches(out.found, out.value), st
	case opCas:
		matched := st.matches(in.expectedPresent, in.expected)
		next := st
		if matched {
			next = kvState{present: true, value: in.value}
		}
		// A never-returned CAS is linearizable at any point after its call,
		// including after every other operation, which is where "it never took
		// effect" lives: the return time after all others provides that choice.
		return out.unknown || out.swapped == matched, next
	default:
		return false, st
	}
}

func partitionByKey(history []porcupine.Operation) [][]porcupine.Operation {
	byKey := make(map[string][]porcupine.Operation)
	for _, op := range history {
		key := op.Input.(kvInput).key
		byKey[key] = append(byKey[key], op)
	}
	keys := make([]string, 0, len(byKey))
	for key := range byKey {
		keys = append(keys, key)
	}
	// Sorted so that partitions, and the visualization, are the same on every run.
	sort.Strings(keys)
	partitions := make([][]porcupine.Operation, 0, len(keys))
	for _, key := range keys {
		partitions = append(partitions, byKey[key])
	}
	return partitions
}

func describeValue(present bool, value string) string {
	if !present {
		return "absent"
	}
	return strconv.Quote(value)
}

func describeOperation(input, output interface{}) string {
	in := input.(kvInput)
	out := output.(kvOutput)
	key := strconv.Quote(in.key)
	var result string
	switch in.kind {
	case opPut:
		result = fmt.Sprintf("put(%s, %s)", key, strconv.Quote(in.value))
	case opDelete:
		result = fmt.Sprintf("delete(%s)", key)
	case opGet:
		result = fmt.Sprintf("get(%s)", key)
		if !out.unknown {
			result += " -> " + describeValue(out.found, out.value)
		}
	case opCas:
		result = fmt.Sprintf("cas(%s, %s, %s)", key, describeValue(in.expectedPresent, in.expected), strconv.Quote(in.value))
		if !out.unknown {
			result += fmt.Sprintf(" -> %t", out.swapped)
		}
	default:
		result = "<invalid>"
	}
	if out.unknown {
		result += " -> never returned"
	}
	return result
}

var kvModel = porcupine.Model{
	Partition: partitionByKey,
	Init:      func() interface{} { return kvState{} },
	Step:      kvStep,
	Hash: func(state interface{}) uint64 {
		st := state.(kvState)
		h := fnv.New64a()
		if st.present {
			h.Write([]byte{1})
			h.Write([]byte(st.value))
		}
		return h.Sum64()
	},
	DescribeOperation: describeOperation,
	DescribeState: func(state interface{}) string {
		st := state.(kvState)
		return describeValue(st.present, st.value)
	},
}
