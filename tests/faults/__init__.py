"""Real-process fault injection: zraft ensembles under client load, faults, and verdicts.

Each scenario runs in a runner process started as ``unshare --net --mount -- python
-m tests.faults.run ...``: a private network namespace and mount namespace of its
own, in which it creates one network namespace per node (``net.Netns``), starts
the nodes with ``ip netns exec`` (``ensemble.FaultEnsemble``), drives a client load that
records a history (``workload.Workload``), injects faults (``scenarios``: SIGKILL,
SIGSTOP, nftables partitions, one-way cuts, packet loss, a lagging follower,
power loss; and around snapshots, ``snapfaults``: kills timed by ``snapwatch``
while a snapshot is written or installed, a follower that must catch up by
InstallSnapshot, power loss after a compaction, a transfer corrupted in
transit), heals, and judges the run (``verify``, on every WAL segment the
nodes ever had: ``walarchive`` keeps those compaction deletes): the linearizability
checker's verdict, acknowledged writes missing from the committed log, the
applied-state hashes of all nodes, at most one leader per term in the nodes'
logs, and no node that voted twice in one term in its WAL.

Without root or network namespaces, ``net.Loopback`` runs the process-level
scenarios (kills, stops, power loss) on 127.0.0.1 and partition scenarios are
skipped. Nothing ever addresses an IP outside loopback or the runner's own
namespaces; every process is started, signalled and reaped by its pid.

Entry points: ``python -m tests.faults.run`` (one scenario), ``python -m
tests.faults.soak`` (random scenarios), ``tests/faults/test_faults.py`` (the CI
slice) and ``tests/faults/test_controls.py`` (the negative controls).
"""
