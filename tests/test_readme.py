"""The README against the code it describes: links resolve, every `bdi` command and option it shows exists,
its settings table is the code's settings, and the first screen holds the two commands CI runs. A README that
drifts from the code sends readers down dead ends; these checks fail the moment it does."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from service.cli.main import main
from service.settings import settings_table

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
LINES = README.splitlines()

# Variables the README names that are not settings of the service: each is read by the code named here.
NOT_SETTINGS = {
    "BDI_CONFIG": ROOT / "service" / "settings.py",              # the TOML file the settings are read from
    "BDI_TEST_DATABASE_URL": ROOT / "tests" / "conftest.py",     # the PostgreSQL server of the test suite
}
FIRST_SCREEN = 40


def prose_lines() -> Iterator[tuple[int, str]]:
    """(line number, text) of the lines outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(LINES, 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def code_texts() -> Iterator[tuple[int, str]]:
    """(line number, text) of every line of a fenced block and every inline code span of the prose (a span may
    wrap onto the next line of its paragraph)."""
    fenced = False
    paragraph: list[tuple[int, str]] = []

    def spans() -> Iterator[tuple[int, str]]:
        text = " ".join(line.strip() for _, line in paragraph)
        for span in re.findall(r"`([^`]+)`", text):
            yield paragraph[0][0], span
        paragraph.clear()

    for number, line in enumerate(LINES, 1):
        if line.lstrip().startswith("```"):
            yield from spans()
            fenced = not fenced
        elif fenced:
            yield number, line
        elif line.strip():
            paragraph.append((number, line))
        else:
            yield from spans()
    yield from spans()


def github_slug(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation but - and _ dropped, spaces to -."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors() -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for _, line in prose_lines():
        match = re.match(r"#{1,6} (.+)", line)
        if match:
            slug = github_slug(match.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def test_github_slug_follows_githubs_rule():
    assert github_slug("Admin CLI (`bdi`)") == "admin-cli-bdi"
    assert github_slug("The admin / IT") == "the-admin--it"
    assert github_slug("Detection quality: `bdi eval`") == "detection-quality-bdi-eval"
    assert github_slug("Roles, keys and the audit trail") == "roles-keys-and-the-audit-trail"


def test_every_anchor_link_resolves_to_a_heading():
    known = anchors()
    links = [(number, target) for number, line in prose_lines()
             for target in re.findall(r"\]\(#([^)\s]+)\)", line)]
    assert links, "the README links none of its sections"
    broken = [f"line {number}: #{target}" for number, target in links if target not in known]
    assert not broken, f"links to no heading: {broken}"


def test_every_relative_link_names_a_file_of_the_repository():
    targets = [(number, target) for number, line in prose_lines()
               for target in re.findall(r"\]\(([^)#\s:]+)(?:#[^)]*)?\)", line)]
    missing = [f"line {number}: {target}" for number, target in targets if not (ROOT / target).exists()]
    assert not missing, f"links to no file: {missing}"


def test_other_files_link_only_to_headings_the_readme_has():
    known = anchors()
    broken = []
    for path in [*ROOT.glob("service/**/*"), *ROOT.glob("tools/**/*"), *ROOT.glob("tests/**/*"), ROOT / "openapi.json"]:
        if path.is_file() and path.suffix in {".py", ".md", ".html", ".json", ".conf", ".toml"}:
            for target in re.findall(r"README\.md#([\w-]+)", path.read_text(encoding="utf-8", errors="replace")):
                if target not in known:
                    broken.append(f"{path.relative_to(ROOT)}: README.md#{target}")
    assert not broken, f"links into the README that resolve to no heading: {broken}"


def options_of(command: click.Command) -> set[str]:
    names = {"--help", "-h"}
    for param in command.params:
        names.update(param.opts)
        names.update(param.secondary_opts)
    return names


def every_command(command: click.Command = main) -> Iterator[click.Command]:
    yield command
    for sub in getattr(command, "commands", {}).values():
        yield from every_command(sub)


def bdi_invocations() -> Iterator[tuple[int, str]]:
    """(line number, words after `bdi`) of every shell command in the README's code that runs `bdi`."""
    for number, text in code_texts():
        text = text.replace("\\|", " ")  # an escaped pipe inside a table cell means "or"
        for segment in re.split(r"&&|;|\||\$\(|\(", text):
            segment = segment.split(" #")[0].strip()
            segment = re.sub(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)*", "", segment)   # VAR=value prefixes
            match = re.match(r"(?:[\w./-]*/)?bdi(?:\s+(.*))?$", segment)
            if match:
                yield number, (match.group(1) or "").replace("[", " ").replace("]", " ")


def resolve(words: list[str]) -> tuple[click.Command | None, list[str], str | None]:
    """The command the words name (None: the README elides it with …), the words left, or what is wrong."""
    command: click.Command = main
    while isinstance(command, click.Group) and words:
        word = words[0]
        if word in {"…", "..."}:
            return None, words[1:], None
        if word.startswith("-"):
            return command, words, None
        if word not in command.commands:
            return command, words, f"`{word}` is no command of this group (it has {sorted(command.commands)})"
        command = command.commands[word]
        words = words[1:]
    return command, words, None


def test_every_bdi_command_and_option_the_readme_names_exists():
    invocations = list(bdi_invocations())
    assert len(invocations) > 30, "the README's bdi commands were not found"
    all_options = set().union(*(options_of(command) for command in every_command()))
    problems = []
    for number, rest in invocations:
        command, words, problem = resolve(rest.split())
        if problem:
            problems.append(f"line {number}: {problem}")
            continue
        allowed = all_options if command is None else options_of(command)
        for word in words:
            option = word.split("=")[0]
            if re.fullmatch(r"--?[A-Za-z][\w-]*", option) and option not in allowed:
                where = "any command" if command is None else f"the command of `bdi {rest}`"
                problems.append(f"line {number}: {option} is no option of {where}")
    assert not problems, "\n".join(problems)


def test_the_resolver_catches_a_command_that_does_not_exist():
    assert resolve(["models", "frobnicate"])[2] is not None
    assert resolve(["models", "list", "--json"])[0] is main.commands["models"].commands["list"]


def readme_settings_rows() -> dict[str, str]:
    """setting name -> its variables cell, from the table under '## Settings'."""
    section = README.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]  # an escaped \| stays in its cell
        if len(cells) == 4 and cells[1].startswith("`BDI_"):
            rows[cells[0]] = cells[1]
    return rows


def test_the_settings_table_is_the_codes_settings():
    rows = readme_settings_rows()
    code = {name: variables for name, variables, _, _ in settings_table()}
    assert sorted(rows) == sorted(code), "the README's settings table and service/settings.py name different settings"
    wrong = {name: rows[name] for name in code if rows[name] != f"`{code[name]}`"}
    assert not wrong, f"variables differ from the code's ({code}): {wrong}"


def test_every_bdi_variable_the_readme_names_is_a_setting():
    known = {variable for _, variables, _, _ in settings_table() for variable in variables.split(" / ")}
    for variable, reader in NOT_SETTINGS.items():
        assert variable in reader.read_text(encoding="utf-8"), f"{variable} is no longer read by {reader}"
    named = set(re.findall(r"\bBDI_[A-Z0-9_]*[A-Z0-9]", README))
    unknown = sorted(named - known - set(NOT_SETTINGS))
    assert not unknown, f"the README names variables the service does not read: {unknown}"


def ci_test_command() -> str:
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    [command] = [line.strip() for line in lines if " -m pytest" in line]
    return command


@pytest.mark.parametrize("command", [
    pytest.param("python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/bdi serve", id="set-up-and-run"),
    pytest.param(ci_test_command(), id="tests-as-ci-runs-them"),
])
def test_the_two_commands_are_on_the_first_screen(command):
    assert command in [line.strip() for line in LINES[:FIRST_SCREEN]], \
        f"`{command}` is not a line of the README's first {FIRST_SCREEN} lines"
