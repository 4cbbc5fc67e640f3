package pgtest

import (
	"context"
	"database/sql"
	"testing"
)

func TestStartAndConnect(t *testing.T) {
	c := Start(t, "127.0.0.1", nil, nil)
	db, err := sql.Open("pgx", c.NewDB(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var one int
	if err := db.QueryRowContext(context.Background(), "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1: %d, %v", one, err)
	}
}
