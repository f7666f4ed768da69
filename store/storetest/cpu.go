package storetest

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// CPUMeter measures the CPU time spent by this process and by the test
// cluster's PostgreSQL (the postmaster and every backend, live or ended)
// over a benchmark, to report it per operation. On a small machine running
// both, CPU per operation is a steadier figure than the rate, which moves
// with whatever else the machine is doing.
type CPUMeter struct {
	pg         int // the postmaster's PID; 0 when PostgreSQL is not readable here
	self0, pg0 time.Duration
}

// StartCPU starts measuring. PostgreSQL's share is measured only when the
// cluster at url runs on this machine with its processes readable in /proc
// (as scripts/pg-test.sh starts it); url may be empty.
func StartCPU(url string) *CPUMeter {
	m := &CPUMeter{}
	if url != "" {
		if c, err := pgx.Connect(context.Background(), url); err == nil {
			var pid int
			if c.QueryRow(context.Background(), `SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'`).Scan(&pid) == nil {
				if f := procStat(pid); len(f) > 1 {
					m.pg, _ = strconv.Atoi(f[1]) // the checkpointer's parent
				}
			}
			c.Close(context.Background())
		}
	}
	m.self0, m.pg0 = selfCPU(), m.pgCPU()
	return m
}

// Report reports the CPU per operation since StartCPU as go-µs/op (this
// process) and pg-µs/op (PostgreSQL, when measured), and returns both (pg
// 0 when unmeasured).
func (m *CPUMeter) Report(b *testing.B) (goPerOp, pgPerOp float64) {
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) }
	goPerOp = per(selfCPU() - m.self0)
	b.ReportMetric(goPerOp, "go-µs/op")
	if m.pg != 0 {
		pgPerOp = per(m.pgCPU() - m.pg0)
		b.ReportMetric(pgPerOp, "pg-µs/op")
	}
	return goPerOp, pgPerOp
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pgCPU is the postmaster's CPU time with its ended children's, plus every
// live child's.
func (m *CPUMeter) pgCPU() time.Duration {
	if m.pg == 0 {
		return 0
	}
	ticks := statTicks(procStat(m.pg), true)
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, _ := strconv.Atoi(filepath.Base(d))
		if f := procStat(pid); len(f) > 1 && f[1] == strconv.Itoa(m.pg) {
			ticks += statTicks(f, false)
		}
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

// procStat is /proc/pid/stat's fields after the command name: state,
// ppid, … (field 3 of proc(5) first).
func procStat(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
}

// statTicks sums utime and stime (fields 14 and 15 of proc(5)), and with
// children cutime and cstime (16 and 17).
func statTicks(f []string, children bool) int64 {
	last := 15
	if children {
		last = 17
	}
	var n int64
	for k := 14; k <= last && k-3 < len(f); k++ {
		v, _ := strconv.ParseInt(f[k-3], 10, 64)
		n += v
	}
	return n
}
