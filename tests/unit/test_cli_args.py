"""The command line's parsing, without a cluster: global options before or after
the command, a URL refused as an endpoint, and the console command's name."""

from __future__ import annotations

import pytest

from raftproc.cli import _parser


def test_global_options_may_come_before_or_after_the_command():
    before = _parser().parse_args(["-w", "json", "--endpoints", "127.0.0.1:7001", "get", "x"])
    after = _parser().parse_args(["get", "x", "-w", "json", "--endpoints", "127.0.0.1:7001"])
    for args in (before, after):
        assert (args.cmd, args.key, args.write_out, args.endpoints) == ("get", "x", "json", [("127.0.0.1", 7001)])


def test_an_option_after_the_command_overrides_the_same_one_before_it():
    args = _parser().parse_args(["-w", "json", "--timeout", "9", "status", "-w", "table"])
    assert (args.write_out, args.timeout) == ("table", 9.0), "the later -w wins; the earlier --timeout stays"


def test_options_after_a_member_subcommand_count_too():
    args = _parser().parse_args(["member", "list", "--config", "c.toml"])
    assert (args.member_cmd, args.config, args.write_out) == ("list", "c.toml", "table")


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:7001", "https://node:7001"])
def test_a_url_endpoint_is_refused_while_parsing(endpoint, capsys):
    with pytest.raises(SystemExit) as ended:
        _parser().parse_args(["get", "x", "--endpoints", endpoint])
    assert ended.value.code == 2 and "HOST:PORT" in capsys.readouterr().err


def test_set_without_a_value_leaves_it_to_stdin_and_the_program_is_raftproc():
    p = _parser()
    assert p.prog == "raftproc"
    assert p.parse_args(["set", "k"]).value is None
