"""Which of a node's advertised client addresses a client uses (pure).

A node may advertise several client addresses (``raftkv node --advertise-client``), one per
network it is reached from: in docker-compose, ``n1:7400`` inside the compose network and
``127.0.0.1:7401`` through the port the host publishes.  Every client learns all of them (the
``map`` reply's ``clients``) and picks, per node, the one that works from where it runs, with
no configuration of its own:

1. the address the node itself answered at (a seed it was given, or a connection whose
   ``hello`` showed it was that node);
2. else one whose host is a host some node answered at (``127.0.0.1`` for the host's
   published ports): the strongest hint there is, whatever order the lists are in;
3. else an address at the *same position* in the node's list as an address some other node
   answered at: operators list the networks in one order on every node, so position ``i`` of
   every list is one network's view (what Kafka's listener names do, by position instead), and
   this still holds where every node has a host name of its own;
4. else the node's own order.

An address that gave no answer goes last until it answers again or all of its node's addresses
have failed (:func:`after_failure`), so a client whose seeds match none of the advertised
addresses still finds its way, with one failed attempt per node at most, and from then on ranks
by what answered.

Two guards keep the fallback inside the cluster the client reached, since an address that works
"from here" may lead to another cluster (a loopback address advertised by compose nodes leads,
on another machine, to whatever that machine runs at the same port):

* a loopback address is not tried at all unless the client reached the cluster through a
  loopback seed (:func:`candidates`; a node with loopback addresses only keeps them);
* nodes name their cluster (``cluster`` in ``hello`` and ``map`` replies); the client pins the
  first one it hears and treats a node naming another as the wrong node (:func:`same_cluster`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from ..server.config import is_loopback as host_is_loopback


def _host(address: str) -> str:
    return address.rpartition(":")[0].lower()


def is_loopback(address: str) -> bool:
    """Whether ``address`` (``host:port``) names this machine's loopback interface."""
    return host_is_loopback(_host(address))


def candidates(addrs: Sequence[str], loopback: bool) -> list[str]:
    """The addresses of one node's ``addrs`` a client may try: all of them if it reached the cluster
    through a loopback seed (``loopback``), else those that are not loopback addresses, unless all
    are (a node that advertises nothing else, as one started by ``raftkv up``: the cluster check
    then guards it)."""
    if loopback:
        return list(addrs)
    return [a for a in addrs if not is_loopback(a)] or list(addrs)


def same_cluster(pinned: str | None, answered: object) -> bool:
    """Whether an answer naming cluster ``answered`` may be taken by a client pinned to cluster
    ``pinned`` (None: nothing heard yet).  An answer naming no cluster (a node that predates the
    field, during a rolling upgrade) is taken: it cannot be told apart."""
    return pinned is None or not isinstance(answered, str) or answered == pinned


def pin_cluster(pinned: str | None, answered: object) -> str | None:
    """The cluster a client is pinned to once an answer naming ``answered`` was taken: the first
    cluster named stays."""
    if pinned is not None:
        return pinned
    return answered if isinstance(answered, str) else None


def preferred_order(advertised: Mapping[str, Sequence[str]], reached: Mapping[str, str],
                    failed: Collection[str] = (), loopback: bool = True) -> dict[str, list[str]]:
    """Each node's advertised addresses (``advertised``: node id -> its list, in its order), in the
    order a client should try them, given ``reached``: node id -> the address that node last
    answered at (it need not be one it advertises: a seed may be a load balancer's), and
    ``failed``: addresses that gave no answer since (they go last).  Without ``loopback`` (the
    client reached the cluster through no loopback seed) loopback addresses are left out
    (:func:`candidates`)."""
    positions = {addrs.index(a) for n, a in reached.items() if a in (addrs := list(advertised.get(n, ())))}
    hosts = {_host(a) for a in reached.values()}
    out: dict[str, list[str]] = {}
    for node_id, every in advertised.items():
        allowed = set(candidates(every, loopback))
        mine = reached.get(node_id)
        # positions count in the whole list: position i is one network's view on every node
        ranked = sorted(((i, a) for i, a in enumerate(every) if a in allowed),
                        key=lambda item: (item[1] in failed, item[1] != mine, _host(item[1]) not in hosts,
                                          item[0] not in positions, item[0]))
        out[node_id] = [a for _, a in ranked]
    return out


def after_failure(addrs: Sequence[str], failed: Collection[str], address: str) -> set[str]:
    """The failed addresses once ``address``, one of a node's ``addrs``, gave no answer.  When all
    of the node's addresses have failed, the others are forgiven (the node may have been down
    rather than unreachable there), so that they are tried again before ``address`` is."""
    out = {*failed, address}
    if all(a in out for a in addrs):
        out.difference_update(a for a in addrs if a != address)
    return out
