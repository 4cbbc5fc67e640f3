package hub

// QueueLen bounds the frames waiting for one agent.
const QueueLen = 128

// Stream is the hub's side of one agent stream: a bounded queue of encoded
// frames and a way to end the stream. The transport (the server's
// WebSocket) writes the netmap, then the queued frames in order.
type Stream struct {
	node uint64
	// from is the address the stream comes from (Node.SeenFrom).
	from string
	send chan []byte
	// close ends the stream (once). Graceful closes send the reason to the
	// agent and wait for its answer; others just drop the connection, for
	// agents that are dead or too slow to take part in a handshake. The
	// hub calls it under its lock: it must not wait.
	close func(reason string, graceful bool)

	// Guarded by Hub.mu.
	// version is the negotiated stream protocol version.
	version int
	// dropped is set once the hub gave up on this stream, so nothing more
	// is queued to it.
	dropped bool
	// netmap is the first frame, set by Attach before the stream's writer
	// starts; the writer takes it (Netmap) before anything queued.
	netmap *NetmapFrame
}

// NewStream makes the hub's side of a stream of node, coming from address
// from, with room for queue frames (QueueLen for agents). close ends the
// stream; see Stream.close.
func NewStream(node uint64, from string, queue int, close func(reason string, graceful bool)) *Stream {
	return &Stream{node: node, from: from, send: make(chan []byte, queue), close: close}
}

// Node is the stream's node.
func (c *Stream) Node() uint64 { return c.node }

// Queue is where the frames to send wait, in order; the writer reports
// each one it takes with Hub.Written.
func (c *Stream) Queue() <-chan []byte { return c.send }

// Netmap takes the stream's first frame, set by Attach: nil once taken.
// Only the stream's writer calls it, after Attach returned.
func (c *Stream) Netmap() *NetmapFrame {
	f := c.netmap
	c.netmap = nil
	return f
}

// Close ends the stream with reason (see NewStream's close).
func (c *Stream) Close(reason string, graceful bool) { c.close(reason, graceful) }
