package control

// Netmap size: the coordinator caps the mesh at MaxNodes nodes, and the
// agent reads frames of up to MaxNetmapFrame, which a netmap of MaxNodes
// nodes of the largest encoding fits with room to spare. A coordinator test
// checks the arithmetic against its name and tag limits.
//
// A typical node encodes to about 200 bytes (a netmap of 10,000 nodes is
// 1.7 MB); the largest, with a 63-character name and 16 tags of 63
// characters, to 1.3 KB.
const (
	// MaxNetmapFrame is the largest stream frame the agent reads.
	MaxNetmapFrame = 64 << 20
	// MaxNodeJSON bounds one node's JSON encoding in a netmap.
	MaxNodeJSON = 1400
	// MaxNodes is the most nodes a coordinator admits to one mesh.
	MaxNodes = 45_000
)
