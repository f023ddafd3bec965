# The bilateral mesh rule as OPA users would write it, data-driven: an edge is allowed when
# its caller lists the callee among what it calls and the callee lists the caller among what
# it accepts. The harness (repl/benches/peers.rs) writes the declarations as data.json.
package lattice.mesh

import rego.v1

allowed contains [edge.caller, edge.callee] if {
	some edge in data.edges
	data.services[edge.caller].calls[edge.callee]
	data.services[edge.callee].accepts[edge.caller]
}
