package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"

	"github.com/agentg8/agentg8/policy"
	"github.com/agentg8/agentg8/registry"
)

// catalogDigest identifies what decides requests: the tasks and policies
// as loaded and the config, but for where this replica listens and its
// store URL (which may name its own host or password). Replicas that show
// different digests decide differently — one not yet sent SIGHUP after a
// policy was revoked still allows what it allowed.
func catalogDigest(cfg *Config, reg *registry.Registry, eng *policy.Engine) string {
	c := *cfg
	c.Listen, c.Store = "", ""
	var tasks []string
	for _, t := range reg.Tasks() {
		tasks = append(tasks, t.Name+" "+t.Hash)
	}
	slices.Sort(tasks)
	b, err := json.Marshal(struct {
		Config   Config
		Tasks    []string
		Policies string
	}{c, tasks, eng.Digest()})
	if err != nil { // a config type that does not encode: say so, do not match
		return "unknown"
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
