"""The node's masquerade rule set with a fake `nft` (no root, no kernel), the
conflist that leaves masquerading to the agent, `--uninstall`, and the agent's
memory of the VXLAN device."""

from __future__ import annotations

import logging

import pytest

from cni_plugin import vxlan
from cni_plugin.agent import main as agent_main
from cni_plugin.agent.daemon import Agent, AgentConfig
from cni_plugin.agent.masquerade import FAMILY, TABLE, NodeMasquerade, ruleset
from cni_plugin.config import VxlanConf, parse_netconf
from cni_plugin.conflist import node_conflist, plugin_config
from cni_plugin.nft import FakeNft, NftError
from foundation import netlink

KEY = (FAMILY, TABLE)


def test_one_rule_per_family_for_the_cluster_network():
    text = ruleset(["10.244.0.0/16", "fd44::/48"])
    assert text is not None
    assert text.startswith("table inet skein {\n\tchain postrouting {\n")
    assert "type nat hook postrouting priority srcnat; policy accept;" in text
    assert ("ip saddr 10.244.0.0/16 ip daddr != { 10.244.0.0/16, 224.0.0.0/4 } "
            "masquerade fully-random") in text
    assert "ip6 saddr fd44::/48 ip6 daddr != { fd44::/48, ff00::/8 } masquerade" in text
    assert text.count("masquerade") == 2


def test_overlapping_networks_are_merged_and_several_make_a_set():
    text = ruleset(["10.244.0.0/16", "10.244.3.0/24", "10.96.0.0/16"])
    assert text is not None
    assert "ip saddr { 10.96.0.0/16, 10.244.0.0/16 } ip daddr != " \
           "{ 10.96.0.0/16, 10.244.0.0/16, 224.0.0.0/4 }" in text
    assert "10.244.3.0/24" not in text and "ip6" not in text


def test_no_network_no_table():
    assert ruleset([]) is None


def test_created_once_then_only_listed():
    nft = FakeNft()
    masq = NodeMasquerade(["10.244.0.0/16"], nft)
    assert masq.sync() is True
    assert nft.tables[KEY] == ruleset(["10.244.0.0/16"])
    nft.calls.clear()
    assert masq.sync() is False
    assert nft.calls == [("list", "table", FAMILY, TABLE)]


def test_a_restarted_agent_finds_its_table_and_changes_nothing():
    nft = FakeNft()
    NodeMasquerade(["10.244.0.0/16"], nft).sync()
    nft.calls.clear()
    assert NodeMasquerade(["10.244.0.0/16"], nft).sync() is False
    assert ("-f", "-") not in nft.calls


def test_a_hand_edit_is_undone_in_one_transaction():
    nft = FakeNft()
    masq = NodeMasquerade(["10.244.0.0/16"], nft)
    masq.sync()
    nft.tables[KEY] = "table inet skein {\n\tchain postrouting {\n\t}\n}\n"
    assert masq.sync() is True
    assert nft.tables[KEY] == ruleset(["10.244.0.0/16"])
    del nft.tables[KEY]
    assert masq.sync() is True and KEY in nft.tables


def test_nft_printing_its_own_form_is_accepted_after_one_write():
    """Another nft version may print the rules differently from how they were
    written: the agent compares with what nft printed after its own write."""

    class Reformatting(FakeNft):
        def run(self, args, script=None):
            out = super().run(args, script)
            return out.replace("\t", "    ") if args[0] == "list" else out

    nft = Reformatting()
    masq = NodeMasquerade(["10.244.0.0/16"], nft)
    assert masq.sync() is True
    assert masq.sync() is False


def test_other_tables_are_never_touched():
    nft = FakeNft()
    nft.tables[("inet", "skein_masq")] = "table inet skein_masq {\n}\n"
    nft.tables[("ip", "nat")] = "table ip nat {\n}\n"
    masq = NodeMasquerade(["10.244.0.0/16"], nft)
    masq.sync()
    masq.remove()
    assert set(nft.tables) == {("inet", "skein_masq"), ("ip", "nat")}


def test_no_masquerade_removes_what_an_earlier_run_left():
    nft = FakeNft()
    NodeMasquerade(["10.244.0.0/16"], nft).sync()
    off = NodeMasquerade([], nft)
    assert off.sync() is True and KEY not in nft.tables
    assert off.sync() is False


def test_a_failing_nft_is_an_error_not_a_missing_table():
    nft = FakeNft()
    nft.fail = "nft: Operation not permitted"
    with pytest.raises(NftError) as err:
        NodeMasquerade(["10.244.0.0/16"], nft).sync()
    assert not err.value.missing
    assert nft.tables == {}


def test_the_agent_keeps_the_rule_set_and_logs_a_failure_once(caplog):
    nft = FakeNft()
    agent = Agent(AgentConfig(node="n1", cluster_cidrs=("10.244.0.0/16",), socket_path=None),
                  None, nft=nft)
    agent.sync_masquerade()
    assert KEY in nft.tables
    with caplog.at_level(logging.INFO, logger="skein.agent"):
        for _ in range(3):
            nft.fail = "nft: boom"
            agent.sync_masquerade()
        agent.sync_masquerade()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "boom" in errors[0].getMessage()
    assert any("in place again" in r.getMessage() for r in caplog.records)


def test_the_agent_without_ip_masq_or_overlay():
    nft = FakeNft()
    NodeMasquerade(["10.244.0.0/16"], nft).sync()
    Agent(AgentConfig(node="n1", ip_masq=False, socket_path=None), None, nft=nft
          ).sync_masquerade()
    assert KEY not in nft.tables
    nft.calls.clear()
    fastpath_only = Agent(AgentConfig(node="n1", overlay=False, socket_path=None), None,
                          nft=nft)
    fastpath_only.sync_masquerade()
    assert nft.calls == []


def test_uninstall_removes_the_table(capsys):
    nft = FakeNft()
    NodeMasquerade(["10.244.0.0/16"], nft).sync()
    assert agent_main.uninstall(nft) == 0
    assert KEY not in nft.tables and "removed table inet skein" in capsys.readouterr().out
    assert agent_main.uninstall(nft) == 0
    assert "found no table" in capsys.readouterr().out
    nft.fail = "nft: Operation not permitted"
    assert agent_main.uninstall(nft) == 1


def test_the_agents_conflist_leaves_masquerading_to_the_agent():
    agent = Agent(AgentConfig(node="n1", cluster_cidrs=("10.244.0.0/16",)), None,
                  nft=FakeNft())
    conflist = agent.conflist(["10.244.1.0/24"], 1450)
    skein = parse_netconf(plugin_config(conflist, 0))
    assert skein.ip_masq is False and skein.agent_socket == "/run/skein/agent.sock"
    assert skein.ip_masq_exclude == ("10.244.0.0/16",)  # skeinctl status reads it
    assert [p["type"] for p in conflist["plugins"]] == ["skein", "portmap"]
    # Without a fast path the agent still masquerades for the node.
    agent = Agent(AgentConfig(node="n1", socket_path=None), None, nft=FakeNft())
    assert agent.conflist(["10.244.1.0/24"], 1450)["plugins"][0]["ipMasq"] is False


def test_a_conflist_without_agent_masquerades_per_pod():
    plugin = node_conflist(["10.244.1.0/24"], cluster_cidrs=["10.244.0.0/16"])["plugins"][0]
    assert plugin["ipMasq"] is True
    plugin = node_conflist(["10.244.1.0/24"], agent_socket="/run/skein/agent.sock",
                           agent_masquerades=False)["plugins"][0]
    assert plugin["ipMasq"] is True
    assert node_conflist(["10.244.1.0/24"], ip_masq=False)["plugins"][0]["ipMasq"] is False


def test_uninstall_needs_no_node(monkeypatch, capsys):
    monkeypatch.setattr(agent_main, "uninstall", lambda: 0)
    assert agent_main.main(["--uninstall"]) == 0
    assert agent_main.main([]) == 2
    assert "--node is required" in capsys.readouterr().err


def test_the_known_vxlan_device_is_checked_by_index_only(monkeypatch):
    conf = VxlanConf()
    link = netlink.Link(index=7, name="skein.1", mac="02:00:00:00:00:01", mtu=1450,
                        kind="vxlan", master=None, up=True, promisc=False)
    ensured: list[VxlanConf] = []

    def ensure_device(ipr, c):
        ensured.append(c)
        return link

    index = {"skein.1": 7}
    monkeypatch.setattr(vxlan, "ensure_device", ensure_device)
    monkeypatch.setattr(netlink, "link_index", lambda name: index.get(name))
    known = vxlan.KnownDevice()
    assert known.device(None, conf) is link and len(ensured) == 1  # nothing known yet
    assert known.device(None, conf) is link and len(ensured) == 1
    index["skein.1"] = 8  # deleted and made again by someone else: verified again
    known.device(None, conf)
    assert len(ensured) == 2
    known.remember(conf, link)
    del index["skein.1"]  # gone: made again
    known.device(None, conf)
    assert len(ensured) == 3
    known.forget()
    index["skein.1"] = 7
    known.device(None, conf)
    assert len(ensured) == 4
