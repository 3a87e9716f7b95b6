"""The pieces of scripts/chaos.py: a network of namespaces (_net), the processes
in it (_cluster, with _probe inside each namespace), the faults (_nemesis), what
users do meanwhile (_workload), the checks at the end (_invariants) and the
report (_report)."""
