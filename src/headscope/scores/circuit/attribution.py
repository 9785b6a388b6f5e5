"""Deprecated: renamed `headscope.scores.circuit.eap` (its job's name);
this name goes in the next release."""

from headscope.renamed import keep_old_name

keep_old_name(__name__, "headscope.scores.circuit.eap")
