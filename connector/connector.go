// Package connector defines how an action reaches its upstream. The http
// sub-package is the first implementation; an MCP connector can follow.
package connector
