"""Error handling: a bad config, a missing interface and a non-root user
each get a one-line error naming the thing and the fix (no testbed needed)."""
import re

from ubox_e2e import BIN, one_line, run, wire_config


def test_bad_config(tdir, names):
    bad = tdir / "bad.toml"
    bad.write_text('[runtime]\nworkers = "two"\n')
    rc, out = run([BIN / "ubox-runtime", "--config", bad])
    print(f"    got: {out}")
    assert rc != 0, "exit code 0 for a bad config"
    assert one_line(out), "error is not one line"
    assert "runtime.workers" in out, "error does not name the key"

    bad2 = tdir / "bad2.toml"
    bad2.write_text('[[port]]\nname = "a"\ndriver = "af_packet"\niface = "a"\n[[wire]]\nports = ["a", "zz"]\n')
    rc, out = run([BIN / "ubox-runtime", "--config", bad2])
    print(f"    got: {out}")
    assert rc != 0 and "unknown port 'zz'" in out, "unknown wire port not reported"

    good = tdir / "good.toml"
    good.write_text(wire_config(names.instance("notroot"), names.ic, names.is_))
    good.chmod(0o644)
    rc, out = run(["runuser", "-u", "nobody", "--", BIN / "ubox-runtime", "--config", good])
    print(f"    got: {out}")
    assert rc != 0 and re.search(r"must run as root.*sudo", out, re.S), "not-root error missing"


def test_missing_interface(tdir, names):
    cfg = tdir / "missing.toml"
    cfg.write_text(wire_config(names.instance("missing"), "ubx-nope", names.is_))
    rc, out = run([BIN / "ubox-runtime", "--config", cfg])
    print(f"    got: {out}")
    assert rc != 0, "exit code 0 with a missing interface"
    assert one_line(out), "error is not one line"
    assert "interface 'ubx-nope' not found" in out, "error does not name the interface"
