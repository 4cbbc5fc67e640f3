package coordinator

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/internal/logsafe"
)

// maxSecretLen bounds auth keys and credentials in a request; real ones are
// well under 100 characters.
const maxSecretLen = 256

// Handler is the coordinator's HTTP API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(control.PathRegister, s.bodyDeadline(s.handleRegister))
	// The stream alone has no body deadline: it is long-lived.
	mux.HandleFunc(control.PathStream, s.handleStream)
	mux.HandleFunc(control.PathChallenge, s.bodyDeadline(s.handleChallenge))
	mux.HandleFunc(control.PathNetcheckInfo, s.bodyDeadline(s.handleNetcheckInfo))
	mux.HandleFunc(control.PathRelayOffer, s.bodyDeadline(s.handleRelayOffer))
	mux.HandleFunc("/", s.bodyDeadline(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not found")
	}))
	return mux
}

// handleRegister serves POST /api/v1/register.
func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	att, ok := s.beginAuth(w, r)
	if !ok {
		return
	}
	defer att.ok()
	req, status, err := decodeRegisterRequest(w, r)
	if err != nil {
		s.metrics.registrations.With("invalid").Inc()
		s.logLimit.Log(s.log, slog.LevelInfo, "register refused: bad request", "status", status, "reason", logsafe.Clip(err.Error()), "remote", r.RemoteAddr)
		writeError(w, status, err.Error())
		return
	}

	joinKey, ok := s.reserveJoin(w, req)
	if !ok {
		return
	}
	proven, err := s.checkProof(&req)
	var reg Registration
	if err == nil {
		reg, err = s.store.register(r.Context(), req, proven)
	}
	if err != nil || (!reg.Created && reg.Credential == req.Credential) {
		s.refundJoin(joinKey) // no node admitted by the key
	}
	if err != nil {
		status, msg := registerErrorStatus(err)
		result := "refused"
		if status == http.StatusInternalServerError {
			result = "error"
		}
		s.metrics.registrations.With(result).Inc()
		if status == http.StatusInternalServerError {
			s.log.Error("register failed", "err", err)
		} else {
			// The reason is safe to log; the key or credential is not.
			s.logLimit.Log(s.log, slog.LevelInfo, "register refused", "hostname", logsafe.Clip(req.Hostname), "status", status, "reason", msg, "remote", r.RemoteAddr)
		}
		if status == http.StatusUnauthorized {
			att.failed()
		}
		writeError(w, status, msg)
		return
	}
	if reg.Created || reg.Credential != req.Credential { // admitted by auth key
		s.hub.Upsert(reg.Node)
	} else if !s.hub.UpdateMember(reg.Node) {
		// Removed or expired between the store's answer and now.
		s.log.Info("register refused: node left the mesh meanwhile", "node", reg.Node.ID, "remote", r.RemoteAddr)
		s.metrics.registrations.With("refused").Inc()
		writeError(w, http.StatusUnauthorized, ErrNodeRemoved.Error())
		return
	}
	s.life.ephemeral.registered(reg.Node.ID, reg.Ephemeral, time.Now())
	if reg.Created {
		s.metrics.registrations.With("created").Inc()
	} else {
		s.metrics.registrations.With("readmitted").Inc()
	}
	s.logLimit.LogFor(strconv.FormatUint(reg.Node.ID, 10), s.log, slog.LevelInfo, "node registered", "node", reg.Node.ID, "name", reg.Node.Name, "ip", reg.Node.IP,
		"new", reg.Created, "remote", r.RemoteAddr)

	// The answer carries a credential; no cache may keep it.
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, control.RegisterResponse{
		NodeID:     reg.Node.ID,
		Name:       reg.Node.Name,
		IP:         reg.Node.IP,
		Prefix:     control.OverlayPrefix.String(),
		IP6:        reg.Node.IP6,
		Prefix6:    s.store.OverlayPrefix6().String(),
		Credential: reg.Credential,
	})
}

// decodeRegisterRequest reads and checks one JSON request, returning the
// HTTP status to answer with if it is unacceptable.
func decodeRegisterRequest(w http.ResponseWriter, r *http.Request) (control.RegisterRequest, int, error) {
	var req control.RegisterRequest
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return req, http.StatusUnsupportedMediaType, errors.New("Content-Type must be application/json")
		}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, control.MaxRequestBody))
	err := dec.Decode(&req)
	if err == nil {
		// Exactly one JSON value: trailing data means a confused client.
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("trailing data after JSON object")
			if terr != nil && !isSyntaxError(terr) {
				err = terr
			}
		}
	}
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return req, http.StatusRequestEntityTooLarge, errors.New("request body too large")
		}
		return req, http.StatusBadRequest, errors.New("malformed JSON request: " + err.Error())
	}
	if err := req.Validate(); err != nil {
		return req, http.StatusBadRequest, err
	}
	if len(req.AuthKey) > maxSecretLen || len(req.Credential) > maxSecretLen {
		return req, http.StatusBadRequest, errors.New("auth_key or credential too long")
	}
	return req, 0, nil
}

func isSyntaxError(err error) bool {
	_, ok := errors.AsType[*json.SyntaxError](err)
	return ok
}

// registerErrorStatus maps a registration failure to its HTTP answer.
func registerErrorStatus(err error) (int, string) {
	for _, e := range []error{ErrUnknownAuthKey, ErrAuthKeyExpired, ErrAuthKeyUsed, ErrAuthKeyUsedUp, ErrAuthKeyRevoked,
		ErrBadCredential, ErrNodeRemoved, ErrNodeExpired, ErrCredentialKeyMismatch, ErrBadProof, ErrChallengeStale} {
		if errors.Is(err, e) {
			return http.StatusUnauthorized, e.Error()
		}
	}
	switch {
	case errors.Is(err, ErrPublicKeyInUse):
		return http.StatusConflict, ErrPublicKeyInUse.Error()
	case errors.Is(err, ErrDegenerateKey):
		return http.StatusBadRequest, ErrDegenerateKey.Error()
	case errors.Is(err, errChallengesBusy):
		return http.StatusServiceUnavailable, errChallengesBusy.Error()
	case errors.Is(err, errPoolExhausted):
		return http.StatusServiceUnavailable, errPoolExhausted.Error()
	case errors.Is(err, errMeshFull):
		return http.StatusServiceUnavailable, errMeshFull.Error()
	}
	return http.StatusInternalServerError, "internal error"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// A failed write means the client went away; nothing left to tell it.
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers with the API's error body.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, control.Error{Error: msg})
}
