package hub

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/meshvpn/meshvpn/control"
)

// Why an agent's frame was not relayed; the texts are metric labels.
var (
	errFrameTooBig   = errors.New("oversize")
	errFrameBad      = errors.New("malformed")
	ErrNotSignal     = errors.New("not a signal")
	errSignalInvalid = errors.New("invalid")
)

// DecodeSignal parses one text frame from an agent. Agents send only
// signals; a signal larger than control.MaxSignalFrame or with a field
// beyond its limit is refused before anything else looks at it. The error
// wraps one of the errFrame values and says nothing the sender chose beyond
// lengths.
func DecodeSignal(data []byte) (*control.Signal, error) {
	if len(data) > control.MaxSignalFrame {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", errFrameTooBig, len(data), control.MaxSignalFrame)
	}
	var m control.Message
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%w: %d bytes of bad JSON", errFrameBad, len(data))
	}
	if m.Type != control.MsgSignal {
		return nil, ErrNotSignal
	}
	if m.Signal == nil {
		return nil, fmt.Errorf("%w: signal frame without signal", errFrameBad)
	}
	if err := m.Signal.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", errSignalInvalid, err)
	}
	return m.Signal, nil
}

// DropLabel is the signals metric's result label for a refused frame.
func DropLabel(err error) string {
	for _, e := range []error{errFrameTooBig, errFrameBad, errSignalInvalid} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return "dropped"
}
