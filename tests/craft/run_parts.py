"""Runs a parts file to the prime step with craft-parts, the library charmcraft builds charms
with, for tests/it/charmcraft_part.rs.

    run_parts.py --parts FILE --work-dir DIR [--rerun PART] [--build-for ARCH]

The parts go through charmcraft's grammar first (craft-application's, for `to <arch>:` and
`on <arch>:` selections), for the architecture the charm is built for: `--build-for`, which
also sets craft-parts' CRAFT_ARCH_BUILD_FOR, or else this machine's. Everything the parts' steps print goes to this process's stdout and stderr, each action is
announced on stdout as it starts, and a failed step ends the run with exit 1 and craft-parts'
own description of the failure on stderr (an invalid parts file too). `--rerun PART` primes
that one part again, as craft-parts does when only its prime step changed (its override-prime,
say); without it, a second run in the same work dir does what is outdated, and what depends on
it, as `charmcraft pack` does after a change of the charm.

The one thing that differs from charmcraft: no package manager. charmcraft installs the build
packages in its build instance; a test must not apt-get install on the machine running it
(which provides the C compiler and the Rust toolchain the tests need), and the venv has no
python-apt anyway. So craft-parts gets the package repository it uses on a platform it has no
package manager for, which installs nothing; what would have been installed is printed.
"""

import argparse
import logging
import pathlib
import sys

try:
    import craft_cli
    import craft_platforms
    import yaml
    from craft_application import grammar
    from craft_grammar.errors import CraftGrammarError
    from craft_parts import LifecycleManager, PartsError, Step
    from craft_parts import packages
    from craft_parts.packages.base import DummyRepository
except ImportError as error:
    sys.exit(
        f"run_parts.py: {error}: craft-parts or craft-application is not installed in "
        f"{sys.prefix}; "
        "run tests/run once (it installs tests/requirements.txt into target/test-venv)"
    )


class _NoPackageManager(DummyRepository):
    @classmethod
    def install_packages(cls, package_names: list[str], **_: object) -> list[str]:
        if package_names:
            print(f"run_parts.py: not installing packages {package_names}", flush=True)
        return []


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", required=True, type=pathlib.Path)
    parser.add_argument("--work-dir", required=True, type=pathlib.Path)
    parser.add_argument("--rerun", metavar="PART")
    parser.add_argument("--build-for", metavar="ARCH")
    args = parser.parse_args()

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="craft-parts: %(message)s")
    packages._get_repository_for_platform = lambda: _NoPackageManager

    parts = yaml.safe_load(args.parts.read_text())
    # craft-application reports what it does through craft-cli's emitter.
    craft_cli.emit.init(craft_cli.EmitterMode.QUIET, "run_parts.py", "run_parts.py")
    host = craft_platforms.DebianArchitecture.from_host().value
    build_for = args.build_for or host
    try:
        parts["parts"] = grammar.process_parts(
            parts_yaml_data=parts["parts"],
            arch=host,
            target_arch=build_for,
            platform_ids={build_for},
        )
    except CraftGrammarError as error:
        print(f"run_parts.py: the parts' grammar for {build_for}: {error}", file=sys.stderr)
        return 1
    finally:
        craft_cli.emit.ended_ok()
    try:
        lcm = LifecycleManager(
            parts,
            application_name="charmcraft",
            arch=build_for,
            cache_dir=args.work_dir / "cache",
            work_dir=args.work_dir,
            # A local source that is this checkout leaves out its target/ (gitignored, so never
            # in the git clone the shipped part builds from). craft-parts does so by itself when
            # the work dir is under target/, but not when CARGO_TARGET_DIR puts it elsewhere.
            ignore_local_sources=["target"],
        )
        if args.rerun:
            actions = lcm.plan(Step.PRIME, [args.rerun], rerun=True)
        else:
            actions = lcm.plan(Step.PRIME)
        with lcm.action_executor() as executor:
            for action in actions:
                step = f"{action.action_type.name} {action.part_name} {action.step.name}"
                print(f"run_parts.py: {step}", flush=True)
                executor.execute(action, stdout=sys.stdout, stderr=sys.stderr)
    except PartsError as error:
        print(f"run_parts.py: {error.brief}", file=sys.stderr)
        for extra in (error.details, error.resolution):
            if extra:
                print(extra, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
