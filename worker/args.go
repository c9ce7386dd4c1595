package worker

import (
	"bytes"
	"encoding/json"

	"github.com/snakepit-go/snakepit/internal/jsonvalid"
)

// EncodeArgs turns a Go value into the JSON object a tool receives as keyword
// arguments. nil becomes {}; json.RawMessage and []byte are validated, not
// re-encoded. Anything that is not a JSON object is an *ArgsError.
func EncodeArgs(tool string, args any) (json.RawMessage, error) {
	var raw []byte
	marshalled := false // json.Marshal's output is valid JSON: no second scan
	switch v := args.(type) {
	case nil:
		return json.RawMessage("{}"), nil
	case json.RawMessage:
		raw = v
	case []byte:
		raw = v
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, &ArgsError{Tool: tool, Reason: err.Error()}
		}
		raw, marshalled = b, true
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return json.RawMessage("{}"), nil
	}
	if !marshalled && !jsonvalid.Valid(raw) {
		return nil, &ArgsError{Tool: tool, Reason: "not valid JSON"}
	}
	if raw[0] != '{' {
		return nil, &ArgsError{Tool: tool, Reason: "keyword arguments must be a JSON object, got " + jsonKind(raw[0])}
	}
	return json.RawMessage(raw), nil
}

func jsonKind(first byte) string {
	switch first {
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	default:
		return "a number"
	}
}
