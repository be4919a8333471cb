"""The client's address: X-Forwarded-For is believed only from trusted proxies."""

import pytest

from engine.intake.client_ip import client_address, trusted_networks

PROXIES = trusted_networks(["10.0.0.0/8", "::1"])


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert client_address("10.1.2.3", "203.0.113.7", ()) == "10.1.2.3"


def test_a_trusted_proxy_passes_on_the_client_it_saw() -> None:
    assert client_address("10.1.2.3", "203.0.113.7", PROXIES) == "203.0.113.7"
    assert client_address("::1", "2001:db8::5", PROXIES) == "2001:db8::5"


def test_a_forged_entry_left_of_the_real_client_is_not_believed() -> None:
    # The client wrote "1.1.1.1" itself; our proxy appended the address it saw.
    assert client_address("10.1.2.3", "1.1.1.1, 203.0.113.7, 10.9.9.9", PROXIES) == "203.0.113.7"


def test_an_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    assert client_address("198.51.100.4", "203.0.113.7", PROXIES) == "198.51.100.4"


def test_only_proxies_in_the_chain_gives_the_farthest_and_no_header_gives_the_peer() -> None:
    assert client_address("10.1.2.3", "10.0.0.5, 10.0.0.6", PROXIES) == "10.0.0.5"
    assert client_address("10.1.2.3", None, PROXIES) == "10.1.2.3"
    assert client_address(None, "203.0.113.7", PROXIES) is None


def test_a_trusted_proxy_setting_that_is_no_network_is_refused() -> None:
    with pytest.raises(ValueError, match="not-an-ip"):
        trusted_networks(["not-an-ip"])
