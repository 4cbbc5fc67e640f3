package store

import "testing"

func TestDollarPlaceholders(t *testing.T) {
	for in, want := range map[string]string{
		`SELECT 1`:                              `SELECT 1`,
		`UPDATE t SET a = ?, b = ? WHERE c = ?`: `UPDATE t SET a = $1, b = $2 WHERE c = $3`,
		`SELECT 1 FROM n WHERE ip = ?1 UNION ALL SELECT 1 FROM h WHERE ip = ?1`: `SELECT 1 FROM n WHERE ip = $1 UNION ALL SELECT 1 FROM h WHERE ip = $1`,
	} {
		if got := dollarPlaceholders(in); got != want {
			t.Errorf("%s: got %s, want %s", in, got, want)
		}
	}
}

func TestHasPassword(t *testing.T) {
	for store, want := range map[string]bool{
		"":                                false,
		"postgres://u@h/db":               false,
		"postgres://u:pw@h/db":            true,
		"host=h dbname=db password=pw":    true,
		"host=h dbname=db":                false,
		"postgresql://u:pw@[::1]:5432/db": true,
	} {
		if got := HasPassword(store); got != want {
			t.Errorf("%q: %v, want %v", store, got, want)
		}
	}
}
