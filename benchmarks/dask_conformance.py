"""Distributed's own test modules against a hub: does a scheduler with the federation
plugins preloaded still behave like Dask's?

``python -m benchmarks.dask_conformance [--repo GITDIR] [--ref REF] [--modules M ...]
[--prefix CMD] [--timeout S] [--out FILE]``

Takes distributed's ``distributed/tests`` (plus its ``conftest.py`` and pytest settings)
from a git checkout of distributed with ``git archive`` at the tag of the installed version
(``--ref`` overrides; without that tag the newest commit of ``main`` is used and the
report says so), and runs each module twice: plain, and with
``DASK_DISTRIBUTED__SCHEDULER__PRELOAD='["scheduler_plugins"]'``, which every scheduler the
tests start (in-process ``gen_cluster`` and ``dask scheduler`` subprocesses alike) reads. A
sanity test, first and last, checks that the plugins really are installed in every test of
the preload run (distributed's tests reset dask's config before each test to a snapshot
taken at import: ``-p federation.settings`` puts our defaults in it first). Tests are
compared by id from pytest's JUnit XML; the tests that fail only with the plugins are run
again, alone, both ways (``fail_only_with_plugins_again``: what still differs is ours).
Nothing is copied into this repository; the TLS test certificates are put next to the
installed ``distributed/utils_test.py`` because ``get_cert`` looks for them there.

Needs ``pip install -e ".[conformance]"`` (pytest-rerunfailures: distributed's tests mark
flaky ones). Not part of CI (too long: see the README). ``--prefix`` runs every pytest
through a wrapper (e.g. a slot lock on a shared machine). Writes a JSON summary
(``--out``, default ``benchmarks/results/conformance-<date>.json``; modules already in it
are kept unless run again) and prints the counts.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import distributed

MODULES = ("test_scheduler.py", "test_resources.py", "test_steal.py", "test_client.py",
           "test_active_memory_manager.py", "test_queues.py")
PRELOAD = {"DASK_DISTRIBUTED__SCHEDULER__PRELOAD": '["scheduler_plugins"]'}
SANITY = '''
from distributed.utils_test import gen_cluster


@gen_cluster()
async def test_federation_plugins_are_installed(s, a, b):
    assert "federation-catalog" in s.plugins
'''
#: run first and last: the plugins must be installed in every test, not only the first
SANITY_FILES = ("test_federation_sanity_first.py", "test_federation_sanity_last.py")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", f"--git-dir={repo}", *args], check=True,
                          capture_output=True, text=True).stdout.strip()


def pick_ref(repo: Path, ref: str | None) -> tuple[str, str]:
    """(ref, note): the installed version's tag if the repository has it."""
    if ref:
        return ref, f"--ref {ref}"
    tags = set(_git(repo, "tag").split())
    version = distributed.__version__
    if version in tags:
        return version, f"tag {version} = installed version"
    head = _git(repo, "log", "-1", "--format=%h %ad", "--date=short", "main")
    return "main", (f"no tag {version} in {repo} (newest: "
                    f"{max(tags, key=_version_key, default='none')}); used main at {head}")


def _version_key(tag: str) -> tuple:
    return tuple(int(p) if p.isdigit() else -1 for p in tag.split("."))


def extract(repo: Path, ref: str, into: Path) -> None:
    """distributed/tests, its conftest.py and pytest settings at ``ref`` into ``into``;
    the TLS certificates also next to the installed distributed (``get_cert``)."""
    archive = subprocess.run(
        ["git", f"--git-dir={repo}", "archive", ref, "distributed/tests", "conftest.py",
         "pyproject.toml"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    installed = Path(distributed.__file__).parent / "tests"
    installed.mkdir(exist_ok=True)
    for pem in (into / "distributed" / "tests").glob("*.pem"):
        if not (installed / pem.name).exists():
            shutil.copy(pem, installed / pem.name)
    for name in SANITY_FILES:
        (into / name).write_text(SANITY)


def outcomes(junit: Path) -> dict[str, str]:
    """Test id -> passed/failed/error/skipped from pytest's JUnit XML."""
    result = {}
    for case in ET.parse(junit).iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        result[test_id] = next((k for k in ("failure", "error", "skipped") if k in kinds),
                               "passed").replace("failure", "failed")
    return result


def node_id(test_id: str) -> str:
    """pytest's node id of a JUnit test id (``distributed.tests.test_x::name``)."""
    module, name = test_id.split("::", 1)
    return f"{module.replace('.', '/')}.py::{name}"


def run(work: Path, label: str, tests: list[str], preload: bool, prefix: list[str],
        timeout: int) -> dict:
    """One pytest run of ``tests`` (paths or node ids): counts, seconds, per-test outcomes."""
    junit = work / f"{label}.{'preload' if preload else 'plain'}.xml"
    if preload:
        tests = [SANITY_FILES[0], *tests, SANITY_FILES[1]]
    env = {k: v for k, v in os.environ.items() if k not in PRELOAD}
    env.update(PRELOAD if preload else {})
    # federation.settings as a plugin: our config defaults are loaded before
    # distributed.utils_test snapshots dask's config, which every test is reset to
    cmd = [*prefix, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "-p", "federation.settings",
           "--import-mode=importlib", "-o", "timeout_method=signal", f"--timeout={timeout}",
           "-o", "addopts=-p no:asyncio -p no:legacypath", f"--junitxml={junit}", *tests]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    seconds = round(time.monotonic() - started, 1)
    if not junit.exists():
        raise RuntimeError(f"pytest wrote no report for {label}:\n{proc.stdout[-3000:]}"
                           f"{proc.stderr[-3000:]}")
    tests_out = outcomes(junit)
    for name in SANITY_FILES if preload else ():  # not distributed's tests
        sanity = tests_out.pop(f"{name[:-3]}::test_federation_plugins_are_installed", None)
        if sanity != "passed":
            raise RuntimeError(f"the preload did not install the plugins ({name}: {sanity})")
    counts = {k: sum(v == k for v in tests_out.values())
              for k in ("passed", "failed", "error", "skipped")}
    return {"seconds": seconds, "counts": counts, "tests": tests_out}


def differences(plain: dict[str, str], fed: dict[str, str]) -> tuple[list, list]:
    """(tests failing only with the plugins, tests failing only without them)."""
    bad = ("failed", "error")
    return (sorted(t for t, o in fed.items() if o in bad and plain.get(t) not in bad),
            sorted(t for t, o in plain.items() if o in bad and fed.get(t) not in bad))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path,
                        default=Path("/work/.mirror/dask+distributed/repo"),
                        help="git dir of a distributed clone (bare is fine)")
    parser.add_argument("--ref", help="tag or commit (default: the installed version's tag)")
    parser.add_argument("--modules", nargs="+", default=list(MODULES))
    parser.add_argument("--prefix", default="", help="wrapper command for every pytest run")
    parser.add_argument("--timeout", type=int, default=120, help="seconds per test")
    parser.add_argument("--out", type=Path, default=Path(
        f"benchmarks/results/conformance-{datetime.date.today()}.json"))
    args = parser.parse_args()
    if importlib.util.find_spec("pytest_rerunfailures") is None:
        parser.error("distributed's tests need pytest-rerunfailures (@pytest.mark.flaky): "
                     'pip install -e ".[conformance]"')
    ref, note = pick_ref(args.repo, args.ref)
    print(f"distributed {distributed.__version__}; tests from {note}", flush=True)
    report: dict = {"distributed": distributed.__version__, "tests_from": note, "modules": {}}
    if args.out.exists():  # add to an earlier run's modules
        report["modules"] = json.loads(args.out.read_text()).get("modules", {})
    with tempfile.TemporaryDirectory(prefix="dask-conformance-") as tmp:
        work = Path(tmp)
        extract(args.repo, ref, work)
        for module in args.modules:
            if not (work / "distributed" / "tests" / module).exists():
                print(f"{module}: not in {ref}, skipped", flush=True)
                continue
            prefix, path = shlex.split(args.prefix), [f"distributed/tests/{module}"]
            plain = run(work, module, path, False, prefix, args.timeout)
            fed = run(work, module, path, True, prefix, args.timeout)
            only_fed, only_plain = differences(plain["tests"], fed["tests"])
            # on a busy machine timing-sensitive tests fail now and then, either way: run
            # the differing ones again, alone, both ways; what differs again is ours
            again = [node_id(t) for t in only_fed]
            if again:
                rerun = differences(run(work, f"{module}.again", again, False, prefix,
                                        args.timeout)["tests"],
                                    run(work, f"{module}.again", again, True, prefix,
                                        args.timeout)["tests"])[0]
            report["modules"][module] = {
                "plain": {k: plain[k] for k in ("seconds", "counts")},
                "preload": {k: fed[k] for k in ("seconds", "counts")},
                "fail_only_with_plugins": only_fed, "fail_only_without": only_plain,
                "fail_only_with_plugins_again": rerun if again else [],
            }
            print(f"{module}: plain {plain['counts']} in {plain['seconds']} s; "
                  f"with plugins {fed['counts']} in {fed['seconds']} s; "
                  f"only with plugins: {only_fed or 'none'} (again, alone: "
                  f"{(rerun if again else None) or 'none'}); only without: "
                  f"{only_plain or 'none'}", flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
