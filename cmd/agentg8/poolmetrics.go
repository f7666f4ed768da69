package main

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// poolCollector exposes a PostgreSQL store's connection pool: whether it
// is big enough (acquires that had to wait, and for how long) and how it
// is used, read when scraped.
type poolCollector struct {
	stat                                func() *pgxpool.Stat
	conns, max, acquires, waits, waited *prometheus.Desc
}

func newPoolCollector(stat func() *pgxpool.Stat) *poolCollector {
	return &poolCollector{
		stat:     stat,
		conns:    prometheus.NewDesc("agentg8_store_connections", "PostgreSQL connections of this replica's pool by state: acquired (in use), idle, constructing.", []string{"state"}, nil),
		max:      prometheus.NewDesc("agentg8_store_connections_max", "The pool's size (at least 16; pool_max_conns in the store URL).", nil, nil),
		acquires: prometheus.NewDesc("agentg8_store_acquires_total", "Connections taken from the pool.", nil, nil),
		waits:    prometheus.NewDesc("agentg8_store_acquire_waits_total", "Acquires that found no idle connection and waited for one (or for a new one): a pool too small, or a slow database.", nil, nil),
		waited:   prometheus.NewDesc("agentg8_store_acquire_seconds_total", "Time spent acquiring connections.", nil, nil),
	}
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.conns, c.max, c.acquires, c.waits, c.waited} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stat()
	ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue, float64(s.AcquiredConns()), "acquired")
	ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue, float64(s.IdleConns()), "idle")
	ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue, float64(s.ConstructingConns()), "constructing")
	ch <- prometheus.MustNewConstMetric(c.max, prometheus.GaugeValue, float64(s.MaxConns()))
	ch <- prometheus.MustNewConstMetric(c.acquires, prometheus.CounterValue, float64(s.AcquireCount()))
	ch <- prometheus.MustNewConstMetric(c.waits, prometheus.CounterValue, float64(s.EmptyAcquireCount()))
	ch <- prometheus.MustNewConstMetric(c.waited, prometheus.CounterValue, s.AcquireDuration().Seconds())
}
