package postgres

import "github.com/jackc/pgx/v5/pgxpool"

// PoolOf is the store's pool, for tests that look at its connections.
func PoolOf(s *Store) *pgxpool.Pool { return s.pool }
