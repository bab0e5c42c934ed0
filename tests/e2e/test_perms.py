"""NFs need not be root (issue 9, section 4): the control socket is mode 0660
root:<runtime.group> (default `ubox`); the arena file stays 0600 root's, and
each NF gets its part of the arena over the socket. An NF run by an
ordinary user in the group registers, is listed with its uid and pid, and
sees every packet of its chain; the read-only uboxctl commands work for the
group, `chain apply` stays root's. A user outside the group is refused with
one line naming the group and the fix. A missing group is a config error,
and `group = ""` keeps everything root's only.

The test makes its own users (real accounts, `useradd --system`), named
after UBOX_E2E_PREFIX so that two runs side by side do not share them, and
removes them at the end. Group `ubox` comes from scripts/setup.sh."""
import grp
import json
import os
import pwd
import shutil
import stat
import time
from pathlib import Path

import pytest

from ubox_e2e import BIN, Names, Runtime, load, nf_row, one_line, run, same_file, wire_config

GROUP = "ubox"

CHAIN = """[[chain]]
name = "web"
nfs = ["counter"]
[chain.match]
protocol = "tcp"
ports = [80]
[chain.policy]
counter = "fail-closed"
"""


class User:
    def __init__(self, name):
        pw = pwd.getpwnam(name)
        self.name, self.uid, self.gid = name, pw.pw_uid, pw.pw_gid

    def cmd(self, *cmd, groups=True):
        """cmd run as this user with its groups from the user database
        (setpriv execs it: the process's pid is the command's); without
        `groups`, with none besides its own, as in a session begun before
        it joined them."""
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}",
                "--init-groups" if groups else "--clear-groups", "--", *[str(c) for c in cmd]]


def _make_user(name, groups):
    """A system account without home or shell, in exactly `groups`
    besides its own (an earlier interrupted run's account is reused)."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        rc, out = run(["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin",
                       name])
        assert rc == 0, f"useradd {name}: {out}"
    rc, out = run(["usermod", "-G", ",".join(groups), name])
    assert rc == 0, f"usermod -G {groups} {name}: {out}"
    return User(name)


@pytest.fixture(scope="module")
def users():
    names = Names()
    try:
        grp.getgrnam(GROUP)
    except KeyError:
        pytest.fail(f"group {GROUP} does not exist: run scripts/setup.sh")
    made = []
    try:
        # Short names (at most 32 characters), one pair per UBOX_E2E_PREFIX.
        member = _make_user(f"ubx-{names.instance_prefix}-nf"[:32], [GROUP])
        made.append(member.name)
        outsider = _make_user(f"ubx-{names.instance_prefix}-out"[:32], [])
        made.append(outsider.name)
        yield member, outsider
    finally:
        for n in made:
            run(["userdel", n])


@pytest.fixture
def bins(tdir):
    """The NF and uboxctl binaries where any user may run them (the
    checkout may sit under a directory only root can enter)."""
    d = tdir / "bin"
    d.mkdir()
    for b in ["counter", "uboxctl"]:
        shutil.copy2(BIN / b, d / b)
        (d / b).chmod(0o755)
    return d


def _mode(path):
    st = os.stat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


# An NF run by a user in group ubox (not root) registers, shows in `uboxctl
# nf list` with its uid and pid, and sees every packet of a download through
# its fail-closed chain; the group's member reads stats and the NF list, but
# its `chain apply` is refused (one line, non-zero exit, the chain in force
# unchanged).
def test_nf_runs_as_a_group_member(runtime, procs, traffic, testbed, tdir, users, bins):
    member, _ = users
    gid = grp.getgrnam(GROUP).gr_gid
    rt = runtime("perm")
    sock = Path(f"/run/ubox/{rt.instance}.sock")
    arena = Path(f"/dev/hugepages/ubox-{rt.instance}.arena")
    print(f"    socket {_mode(sock)}, arena {_mode(arena)}, /run/ubox {_mode('/run/ubox')}")
    assert _mode(sock) == (0o660, 0, gid), "control socket is not 0660 root:ubox"
    assert _mode(arena) == (0o600, 0, 0), "arena file is not 0600 root's (NFs get it over the socket)"
    assert _mode("/run/ubox")[0] & 0o001, "/run/ubox is not searchable by the group"
    rt.apply_chain(tdir / "web.toml", CHAIN)

    out = tdir / "nf-out"
    out.mkdir()
    os.chown(out, member.uid, member.gid)
    c = procs.start("counter", member.cmd(bins / "counter", "--instance", rt.instance,
                                          "--json-out", out / "counter.json"))
    assert rt.wait_nf_state("counter=running"), "the group member's NF did not register"
    row = nf_row(rt.nf_list(tdir / "nfs.json"), "counter")
    print(f"    nf list: pid {row['pid']} uid {row['uid']} (NF pid {c.pid}, {member.name} uid {member.uid})")
    assert (row["pid"], row["uid"]) == (c.pid, member.uid), "nf list does not show the NF's pid and uid"
    with open(f"/proc/{c.pid}/status") as f:
        uids = [line.split()[1:] for line in f if line.startswith("Uid:")][0]
    assert uids == [str(member.uid)] * 4, f"the NF is not running as {member.name}: {uids}"

    got = tdir / "got.bin"
    assert traffic.fetch("10M.bin", got, max_time=60), "download through the member's NF (fail-closed)"
    assert same_file(got, testbed.www / "10M.bin"), "download corrupted"

    # Read-only commands work for the group, text and JSON.
    ctl = [bins / "uboxctl", "-i", rt.instance]
    rc, text = run(member.cmd(*ctl, "nf", "list"))
    print(text, end="")
    assert rc == 0, f"uboxctl nf list as {member.name}: {text}"
    line = [ln for ln in text.splitlines() if " counter " in f" {ln} "]
    assert line and f"{member.name} ({member.uid})" in line[0] and f" {c.pid} " in f" {line[0]} ", \
        "nf list text lacks the NF's user and pid"
    rc, js = run(member.cmd(*ctl, "--json", "stats"))
    assert rc == 0, f"uboxctl stats as {member.name}: {js}"
    st = json.loads(js)
    n = nf_row(st, "counter")
    assert n["events_in"] > 1000 and n["events_out"] == n["events_in"], n
    rc, _ = run(member.cmd(*ctl, "chain", "show"))
    assert rc == 0, "chain show as a group member"

    # chain apply is root's.
    (tdir / "open.toml").write_text(CHAIN.replace("fail-closed", "fail-open"))
    rc, msg = run(member.cmd(*ctl, "chain", "apply", tdir / "open.toml"))
    print(f"    chain apply as {member.name}: exit {rc}: {msg.strip()}")
    assert rc != 0, "a group member applied a chain"
    assert one_line(msg) and "needs root" in msg and "sudo" in msg, "refusal is not one line naming root"
    shown = rt.ctl("chain", "show")
    assert "chains version 1 " in shown and "fail-closed" in shown, f"the chain in force changed: {shown}"
    assert rt.stats()["control"]["denied"] == 1, "the refusal was not counted"

    assert c.stop() == 0, "the member's NF exit code on SIGTERM"
    report = load(out / "counter.json")
    st = rt.stats(tdir / "stats.json")
    n = nf_row(st, "counter")
    print(f"    NF saw {report['packets']} packets / {report['bytes']} bytes; runtime in {n['events_in']} "
          f"out {n['events_out']}")
    assert report["packets"] == n["events_in"] == n["events_out"], "every event reached the NF and was answered"
    assert report["bytes"] >= 10_000_000, "the NF saw every byte of the download"
    assert rt.stop() == 0, "runtime exit code"


# A user outside the group gets one line naming the group and the fix, and a
# non-zero exit, from the NF and from uboxctl; it cannot open the arena
# either, and nothing registers. A member whose session began before it
# joined the group is told to log in again.
def test_user_outside_the_group_is_refused(runtime, testbed, tdir, users, bins):
    member, outsider = users
    rt = runtime("perm-out")
    sock = f"/run/ubox/{rt.instance}.sock"
    rc, out = run(outsider.cmd(bins / "counter", "--instance", rt.instance), timeout=30)
    print(f"    NF as {outsider.name}: exit {rc}: {out.strip()}")
    assert rc != 0, "the outsider's NF was accepted"
    assert one_line(out), "the NF's error is not one line"
    assert f"permission denied on the control socket {sock}" in out, "the error does not say permission denied"
    assert f"group '{GROUP}'" in out and f"usermod -aG {GROUP} {outsider.name}" in out, \
        "the error does not name the group and how to join it"
    rc, out = run(outsider.cmd(bins / "uboxctl", "-i", rt.instance, "stats"))
    print(f"    uboxctl stats as {outsider.name}: exit {rc}: {out.strip()}")
    assert rc != 0 and one_line(out) and f"group '{GROUP}'" in out and "permission denied" in out, \
        "uboxctl's error does not name the group"
    arena = f"/dev/hugepages/ubox-{rt.instance}.arena"
    rc, out = run(outsider.cmd("head", "-c", "1", arena))
    assert rc != 0 and "Permission denied" in out, f"the outsider can read the arena: {out}"
    rc, out = run(member.cmd(bins / "counter", "--instance", rt.instance, groups=False), timeout=30)
    print(f"    NF as {member.name} without its groups: exit {rc}: {out.strip()}")
    assert rc != 0 and one_line(out) and "log in again" in out and f"newgrp {GROUP}" in out, \
        "a member whose session lacks the group is not told to log in again"
    assert rt.nf_list()["nfs"] == [], "something registered"
    assert rt.stop() == 0, "runtime exit code"


# runtime.group names a group that does not exist: a one-line config error
# naming it and how to create it. `group = ""`: socket and arena root's only
# (0600), and a member of ubox is told so.
def test_runtime_group_config(procs, testbed, tdir, names, users, bins):
    member, _ = users
    cfg = tdir / "nogroup.toml"
    text = wire_config(names.instance("perm-nogroup"), names.ic, names.is_)
    cfg.write_text(text.replace("[runtime]\n", '[runtime]\ngroup = "ubox-e2e-nosuch"\n', 1))
    for args in ([], ["--check"]):
        rc, out = run([BIN / "ubox-runtime", "--config", cfg, *args])
        print(f"    group missing{' (--check)' if args else ''}: exit {rc}: {out.strip()}")
        assert rc == 2, f"exit {rc} for a missing group, not 2 (a config error)"
        assert one_line(out), "error is not one line"
        assert "group 'ubox-e2e-nosuch' (runtime.group) does not exist" in out and "scripts/setup.sh" in out \
            and "groupadd" in out, "error does not name the group and the fix"

    name = names.instance("perm-root")
    root_cfg = tdir / "root-only.toml"
    root_cfg.write_text(wire_config(name, names.ic, names.is_).replace("[runtime]\n", '[runtime]\ngroup = ""\n', 1))
    rt = procs.add(Runtime(name, root_cfg, tdir / "runtime-root-only.log"))
    sock = f"/run/ubox/{name}.sock"
    assert _mode(sock) == (0o600, 0, 0), "group = \"\": the socket is not 0600 root's"
    assert _mode(f"/dev/hugepages/ubox-{name}.arena") == (0o600, 0, 0), "group = \"\": the arena is not 0600 root's"
    rc, out = run(member.cmd(bins / "counter", "--instance", name), timeout=30)
    print(f"    NF as {member.name} with group = \"\": exit {rc}: {out.strip()}")
    assert rc != 0 and one_line(out) and "root's only" in out, "the refusal does not say root's only"
    assert rt.stop() == 0, "runtime exit code"


# runtime.arena in a directory the group cannot enter: NFs never open the
# arena by path (they get their part of it over the control socket), so a
# member's NF registers and sees the traffic all the same, and the runtime
# has nothing to warn about.
def test_arena_out_of_the_groups_reach(procs, traffic, testbed, tdir, names, users, bins):
    member, _ = users
    name = names.instance("perm-arena")
    closed = Path(f"/dev/hugepages/{name}-closed")
    closed.mkdir(exist_ok=True)
    closed.chmod(0o700)
    try:
        cfg = tdir / "arena.toml"
        cfg.write_text(wire_config(name, names.ic, names.is_).replace(
            "[runtime]\n", f'[runtime]\narena = "{closed}/ubox.arena"\n', 1))
        log = tdir / "runtime-arena.log"
        rt = procs.add(Runtime(name, cfg, log))
        warn = [ln for ln in log.read_text().splitlines() if "keeps group" in ln]
        assert not warn, f"the runtime warns about a path NFs never open: {warn}"
        rt.apply_chain(tdir / "web.toml", CHAIN)
        out = tdir / "nf-out"
        out.mkdir()
        os.chown(out, member.uid, member.gid)
        c = procs.start("counter", member.cmd(bins / "counter", "--instance", name,
                                              "--json-out", out / "counter.json"))
        assert rt.wait_nf_state("counter=running"), "the member's NF did not register"
        got = tdir / "got.bin"
        assert traffic.fetch("small.bin", got, max_time=30), "download through the member's NF"
        assert same_file(got, testbed.www / "small.bin"), "download corrupted"
        assert c.stop() == 0, "the member's NF exit code on SIGTERM"
        # Once the runtime saw it go, what it had not answered is reclaimed.
        assert rt.wait_nf_state("counter=dead"), "the NF's exit was not noticed"
        time.sleep(0.5)
        n = nf_row(rt.stats(), "counter")
        report = load(out / "counter.json")
        print(f"    NF as {member.name} with the arena in {closed} (0700): saw {report['packets']} packets, "
              f"runtime in {n['events_in']}")
        # A packet that came after the NF left is reclaimed, not lost.
        reclaimed = n.get("counts", {}).get("reclaimed", 0)
        assert report["packets"] == n["events_out"] > 0, "the NF did not see the chain's packets"
        assert n["events_in"] == n["events_out"] + reclaimed, "events given, answered and reclaimed do not add up"
        assert rt.stop() == 0, "runtime exit code"
    finally:
        shutil.rmtree(closed, ignore_errors=True)
