package coordinator

import (
	"net/http"

	"github.com/meshvpn/meshvpn/control"
)

// handleChallenge serves GET /api/v1/challenge: the coordinator's public
// key and a fresh challenge, for a proof of key possession. No credential:
// a node needs it before it has one.
func (s *Server) handleChallenge(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	ch, err := s.challenges.issue()
	if err != nil {
		s.log.Error("issue challenge", "err", err)
		writeError(w, http.StatusInternalServerError, "internal error")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, control.Challenge{
		CoordinatorKey: s.identity.pub,
		Challenge:      ch,
		ExpiresIn:      int(challengeTTL.Seconds()),
	})
}

// checkProof refuses degenerate keys and bad proofs in a request with an
// auth key, and tells whether req proves possession of its public key. A
// valid proof uses up its challenge. A request with a credential alone
// needs no check: the credential is bound to the key it was issued for.
func (s *Server) checkProof(req *control.RegisterRequest) (proven bool, err error) {
	if req.AuthKey == "" {
		return false, nil
	}
	proven, err = s.identity.checkKey(req)
	if err != nil || !proven {
		return false, err
	}
	if err := s.challenges.use(req.Challenge); err != nil {
		return false, err
	}
	return true, nil
}
