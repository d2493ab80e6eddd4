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
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence


def _host(address: str) -> str:
    return address.rpartition(":")[0].lower()


def preferred_order(advertised: Mapping[str, Sequence[str]], reached: Mapping[str, str],
                    failed: Collection[str] = ()) -> dict[str, list[str]]:
    """Each node's advertised addresses (``advertised``: node id -> its list, in its order), in the
    order a client should try them, given ``reached``: node id -> the address that node last
    answered at (it need not be one it advertises: a seed may be a load balancer's), and
    ``failed``: addresses that gave no answer since (they go last)."""
    positions = {addrs.index(a) for n, a in reached.items() if a in (addrs := list(advertised.get(n, ())))}
    hosts = {_host(a) for a in reached.values()}
    out: dict[str, list[str]] = {}
    for node_id, addrs in advertised.items():
        mine = reached.get(node_id)
        ranked = sorted(enumerate(addrs), key=lambda item: (item[1] in failed, item[1] != mine,
                                                           _host(item[1]) not in hosts,
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
