"""Exit codes have one home, `core.errors.EXIT_CODES`: README's table, the CLI's epilog and
the error classes agree with it, and the help texts that name a code or a host path by hand
name the right one."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from orchestrator import cli
from orchestrator.core import errors
from orchestrator.core.errors import EXIT_CERTS_EXPIRING, EXIT_CODES, ClusterUnhealthy
from orchestrator.core.host_paths import HOST_BACKUP_DIR

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_codes() -> list[int]:
    """The codes in the first column of the table under README's `### Exit codes`."""
    section = README.read_text().split("\n### Exit codes\n", 1)[1]
    section = re.split(r"\n#+ ", section, maxsplit=1)[0]
    return [int(m[1]) for m in re.finditer(r"^\|\s*(\d+)\s*\|", section, re.MULTILINE)]


def test_readme_table_lists_exactly_the_exit_codes() -> None:
    codes = readme_codes()
    assert len(codes) == len(set(codes)), f"README lists a code twice: {codes}"
    assert codes == sorted(EXIT_CODES)


def test_every_error_class_has_a_documented_code() -> None:
    classes = [
        c
        for c in vars(errors).values()
        if inspect.isclass(c) and issubclass(c, errors.EtcdDeployError)
    ]
    assert len(classes) > 5
    assert {c.__name__: c.exit_code for c in classes if c.exit_code not in EXIT_CODES} == {}


def test_the_table_is_in_order() -> None:
    assert list(EXIT_CODES) == sorted(EXIT_CODES)


def test_epilog_is_built_from_the_table() -> None:
    epilog = cli.app.info.epilog
    assert isinstance(epilog, str)
    listed = [int(m) for m in re.findall(r"(?:: |, )(\d+) ", epilog)]
    assert listed == list(EXIT_CODES)
    assert all(f"{code} {meaning}" in epilog for code, meaning in EXIT_CODES.items())


def test_help_texts_name_the_right_codes_and_paths() -> None:
    # Docstrings are the commands' help: they cannot be f-strings, so they are checked here.
    assert f"Exits {EXIT_CERTS_EXPIRING} " in (cli.certs_check.__doc__ or "")
    assert f"Exits {ClusterUnhealthy.exit_code} " in (cli.status.__doc__ or "")
    assert f"into {HOST_BACKUP_DIR}." in (cli.backup_schedule.__doc__ or "")
