"""Docs stay in step with the code: every setting and CLI command is documented."""

from pathlib import Path

from keystile.cli import build_parser
from keystile.config import SETTINGS

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_in_the_configuration_reference() -> None:
    reference = (ROOT / "docs" / "configuration.md").read_text()
    for setting in SETTINGS:
        if setting.env:
            assert f"`{setting.env}`" in reference, setting.env
        if setting.toml:
            assert f"`{setting.toml}`" in reference, setting.toml


def test_every_cli_command_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command in sub.choices.items():  # type: ignore[union-attr]
        nested = [a for a in command._actions if getattr(a, "choices", None)]
        children = list(nested[0].choices) if nested else [""]
        for child in children:
            phrase = f"keystile {name} {child}".strip()
            assert phrase in readme, phrase


def test_readme_quickstart_and_ci_agree() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test" in readme and "scripts/test" in ci


def test_every_denial_reason_code_is_documented() -> None:
    from keystile.core.reasons import DENIAL_CODES

    readme, policy = (ROOT / "README.md").read_text(), (ROOT / "docs" / "policy.md").read_text()
    for code in DENIAL_CODES:
        assert f"`{code}`" in readme and f"`{code}`" in policy, code


def test_every_reason_and_detail_is_in_the_reasons_table() -> None:
    from keystile.core.reasons import REASONS

    table = (ROOT / "docs" / "reasons.md").read_text()
    rows = {tuple(cell.strip(" `") for cell in line.split("|")[1:4])
            for line in table.splitlines() if line.startswith("| ")}  # fmt: skip
    for reason in REASONS:
        assert (str(reason.outcome.value), reason.code, reason.detail) in rows, reason
