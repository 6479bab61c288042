"""Docs stay in step with the code: every setting and CLI command is documented."""

import re
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


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors of a Markdown page: lower case, punctuation dropped,
    spaces as '-'."""
    found = set()
    for line in text.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
            found.add(slug)
    return found


def _links(page: Path) -> list[tuple[Path, str]]:
    """(target file, anchor) of every relative link on ``page``."""
    found = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        found.append(((page.parent / path).resolve() if path else page, anchor))
    return found


def test_every_relative_link_and_anchor_resolves() -> None:
    pages = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", ROOT / "deploy" / "README.md",
             *sorted((ROOT / "docs").glob("*.md"))]  # fmt: skip
    broken = []
    for page in pages:
        for target, anchor in _links(page):
            if not target.exists():
                broken.append(f"{page.name}: {target.relative_to(ROOT)} does not exist")
            elif anchor and target.suffix == ".md" and anchor not in _anchors(target.read_text()):
                broken.append(f"{page.name}: no heading #{anchor} in {target.name}")
    assert not broken, "\n".join(broken)


def test_every_page_is_reachable_from_the_index() -> None:
    index = ROOT / "docs" / "README.md"
    seen, todo = {index.resolve()}, [index]
    while todo:
        page = todo.pop()
        for target, _ in _links(page):
            if target.suffix == ".md" and target.exists() and target not in seen:
                seen.add(target)
                todo.append(target)
    missing = [p.name for p in (ROOT / "docs").glob("*.md") if p.resolve() not in seen]
    assert not missing, f"not reachable from docs/README.md: {missing}"
