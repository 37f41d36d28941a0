"""The README and docs/ agree with the code: every config key and its default, every `--set`
key, every repository path and link they name, the jobs, and the test command CI runs.

Pure Python (no Spark): the docs are parsed as text and compared with ``recsys.config``'s
dataclasses and the files of the repository.
"""

import dataclasses
import re
import types
import typing
from pathlib import Path

import yaml

from recsys import config

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CONFIGURATION = REPO / "docs" / "configuration.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]

# A compare table reference ({path, format} or {table}) is documented as one key.
LEAF_TYPES = (config.CompareTableRef,)


def _unwrap(tp):
    if typing.get_origin(tp) is typing.Union:
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(inner) == 1:
            return inner[0]
    return tp


def config_fields(cls=config.Config, prefix=""):
    """{dotted key: (type, default)} of every key a config file may set, from the dataclasses."""
    keys = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = _unwrap(hints[f.name])
        key = prefix + f.name
        if dataclasses.is_dataclass(tp) and tp not in LEAF_TYPES:
            keys.update(config_fields(tp, key + "."))
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            keys[key] = (tp, default)
    return keys


def config_keys():
    """{dotted key: default}."""
    return {key: default for key, (_, default) in config_fields().items()}


def documented_keys():
    """{dotted key: default cell} from the `| key | type | default | ...` tables."""
    rows, in_key_table = {}, False
    for line in CONFIGURATION.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            in_key_table = False
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if cells[0] == "key":
            in_key_table = True
            assert cells[2] == "default", f"third column of a key table must be the default: {line}"
            continue
        if in_key_table and not set(cells[0]) <= set("-"):
            match = re.fullmatch(r"`([\w.]+)`", cells[0])
            assert match, f"a key row must name one key in backticks: {line}"
            assert match.group(1) not in rows, f"{match.group(1)} documented twice"
            rows[match.group(1)] = cells[2]
    return rows


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, types.MappingProxyType):
        return dict(value)
    return value


def _same(doc_value, code_value):
    if isinstance(doc_value, bool) != isinstance(code_value, bool):
        return False  # 0 == False in Python, not in the docs
    return doc_value == code_value


def _yaml_or_text(token):
    try:
        return yaml.safe_load(token)
    except yaml.YAMLError:
        return token


def test_every_config_key_is_documented():
    missing = sorted(set(config_keys()) - set(documented_keys()))
    assert not missing, f"keys in recsys/config/ missing from docs/configuration.md: {missing}"


def test_no_documented_key_is_unknown_to_the_code():
    unknown = sorted(set(documented_keys()) - set(config_keys()))
    assert not unknown, f"docs/configuration.md documents keys recsys/config/ lacks: {unknown}"


def test_documented_defaults_are_the_codes():
    documented = documented_keys()
    wrong = []
    for key, default in config_keys().items():
        cell = documented.get(key)
        if cell is None:
            continue  # reported by test_every_config_key_is_documented
        if default is None:
            if not cell.startswith("none"):
                wrong.append(f"{key}: code default is none, docs say {cell!r}")
            continue
        tokens = [_yaml_or_text(t) for t in re.findall(r"`([^`]*)`", cell)]
        if not any(_same(t, _plain(default)) for t in tokens):
            wrong.append(f"{key}: code default {_plain(default)!r}, docs say {cell!r}")
    assert not wrong, "\n".join(wrong)


def _resolves(key):
    """Whether a dotted `--set` key names a config key (below `spark.conf`: any Spark key; below
    a compare table reference: `path`, `format` or `table`)."""
    fields = config_fields()
    if key in fields:
        return True
    if key.startswith("spark.conf."):
        return True
    head, _, last = key.rpartition(".")
    return (fields.get(head, (None,))[0] is config.CompareTableRef
            and last in {f.name for f in dataclasses.fields(config.CompareTableRef)})


def test_every_set_key_in_the_docs_exists():
    bad = []
    for page in PAGES:
        for key in re.findall(r"--set\s+'?([A-Za-z_][\w.]*)=", page.read_text(encoding="utf-8")):
            if key != "dotted.key" and not _resolves(key):
                bad.append(f"{page.relative_to(REPO)}: --set {key}")
    assert not bad, "unknown config keys in --set examples:\n" + "\n".join(bad)


# A repository path: one of these top-level folders, not inside another path or a URL.
PATH_RE = re.compile(r"(?<![\w/.~-])((?:conf|jobs|benchmarks|recsys|tests|docs|data|deploy|\.ci)/"
                     r"(?:[\w.*/-]*[\w*/])?)")


def test_every_repository_path_in_the_docs_exists():
    missing = []
    for page in PAGES:
        for path in PATH_RE.findall(page.read_text(encoding="utf-8")):
            if not (list(REPO.glob(path.rstrip("/"))) if "*" in path else (REPO / path).exists()):
                missing.append(f"{page.relative_to(REPO)}: {path}")
    assert not missing, "paths named in the docs that do not exist:\n" + "\n".join(missing)


def test_every_relative_link_resolves_inside_the_repository():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL or an anchor on the same page
            resolved = (page.parent / target.split("#")[0]).resolve()
            if REPO not in resolved.parents or not resolved.exists():
                broken.append(f"{page.relative_to(REPO)}: ({target})")
    assert not broken, "links that do not resolve inside the repository:\n" + "\n".join(broken)


def test_readme_test_command_is_the_one_ci_runs():
    lines = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    marker = next(n for n, line in enumerate(lines)
                  if line.endswith("The README's test command, verbatim:"))
    command = lines[marker + 1].strip()
    assert command.startswith("python3 -m venv .venv")
    assert f"\n{command}\n" in README.read_text(encoding="utf-8")


def test_ci_runs_every_tier_the_readme_names():
    """Each tier command of README's table is a command of .ci/run."""
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    text = README.read_text(encoding="utf-8")
    table = text[text.index("| tier | command |"):]
    commands = re.findall(r"^\|[^|]+\| `([^`]+)` \|", table[: table.index("\n\n")], flags=re.M)
    assert len(commands) == 3, commands
    missing = [command for command in commands if command not in ci]
    assert not missing, f"README tiers that .ci/run does not run: {missing}"


def test_readme_jobs_table_names_every_job():
    text = README.read_text(encoding="utf-8")
    table = text[text.index("| job | does |"):]
    table = table[: table.index("\n\n")]
    documented = set(re.findall(r"^\| `(\w+)` \|", table, flags=re.M))
    assert documented == {p.stem for p in (REPO / "jobs").glob("*.py")}


def test_every_shipped_config_is_described():
    text = CONFIGURATION.read_text(encoding="utf-8")
    undescribed = [p.name for p in sorted((REPO / "conf").glob("*.yaml"))
                   if f"| `conf/{p.name}` |" not in text]
    assert not undescribed, f"conf files missing from docs/configuration.md: {undescribed}"


README_MAX_LINES = 200  # issue 18: "README at most about 200 lines", the depth in docs/


def test_readme_stays_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move depth to docs/ (issue 18)"
