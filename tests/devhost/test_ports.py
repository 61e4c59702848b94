"""Free ports for the local stack never include a port already promised to a listener not yet bound."""
import pytest

from devhost.ports import free_ports

pytestmark = pytest.mark.integration


def test_ports_promised_but_not_bound_are_never_handed_out_again():
    """`./dev run --table-port P` names a port the system still sees as free until Azurite binds it:
    Azurite's own spare (Queue) port must not be P (seen: EADDRINUSE on the table port)."""
    promised = set(free_ports(40))
    chosen = free_ports(3, besides=promised)
    assert len(set(chosen)) == 3 and not promised & set(chosen)
