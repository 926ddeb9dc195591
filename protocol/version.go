package protocol

const (
	// ALPN is the TLS application protocol every Cohort QUIC connection
	// negotiates. quic-go refuses a handshake without a common ALPN.
	ALPN = "cohort/1"

	// Version is the highest protocol version this build speaks.
	Version uint32 = 1
	// MinVersion is the lowest protocol version this build accepts.
	MinVersion uint32 = 1
)

// Negotiate picks the protocol version for a peer that speaks versions
// [peerMin, peerMax]. It returns ErrVersion when the ranges do not overlap.
func Negotiate(peerMin, peerMax uint32) (uint32, error) {
	v := min(peerMax, Version)
	if v < MinVersion || v < peerMin || peerMin > peerMax {
		return 0, ErrVersion
	}
	return v, nil
}
