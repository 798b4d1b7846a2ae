"""What both kinds of Hub upload share (core.sharing.hub: experiments as dataset repos;
core.sharing.hub_model: one run as a model repo): repo ids, the error type, the reachability and
token checks, and the pieces both cards show (Table 1 as markdown, the sweep commands that
reproduce the runs). Neither module imports the other for these; only the CLI in core.sharing.hub
reaches core.sharing.hub_model (push-model).

torch-free: the reproduce commands are built with core.jobs.launch.grid, never the trainer.
"""

import json
import re
import shlex

import pandas as pd
from huggingface_hub import get_token
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

from core.analysis.stats import TABLE1_CELLS, table1_cells
from core.config import RunConfig, variant_label
from core.jobs.launch import grid
from core.training.data import HubUnavailableError, check_hub_reachable

CARD = "README.md"  # the card of a dataset or model repo

# Hub naming rules (as huggingface_hub checks them, ASCII only) for each half of owner/name:
# letters, digits, - _ . ; no leading or trailing - or . ; no "--" or ".."; 96 characters in all;
# not ending in .git.
_REPO_PART = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")


class HubError(ValueError):
    """A push or pull that cannot be done; the message says why and what to do."""


# ---------------------------------------------------------------------------- checks


def validate_repo_id(repo: str) -> str:
    """Check that `repo` is a Hub repo id of the form owner/name and return it."""
    text = repo if isinstance(repo, str) else ""
    owner, sep, name = text.partition("/")
    ok = (sep and _REPO_PART.fullmatch(owner) and _REPO_PART.fullmatch(name) and len(text) <= 96
          and "--" not in text and ".." not in text and not text.endswith(".git"))
    if not ok:
        raise HubError(f"invalid Hub repo id {str(repo)[:100]!r}: write owner/name, each part of letters, "
                       "digits, '-', '_' or '.', not starting or ending with '-' or '.', without "
                       "'--' or '..', at most 96 characters in all")
    return text


def require_hub(what: str) -> None:
    """Raise HubError at once when the Hub is switched off or unreachable (reuses core.data's probe)."""
    try:
        check_hub_reachable(what)
    except HubUnavailableError as error:
        # core.data's message goes on with data-source alternatives, which do not apply here.
        reason = str(error).partition(". Offline alternatives")[0]
        raise HubError(f"{reason}; nothing was changed locally") from None


def require_token() -> str:
    token = get_token()
    if not token:
        raise HubError("pushing needs a Hugging Face token with write access: run `hf auth login` "
                       "or set HF_TOKEN")
    return token


def hub_failure(what: str, repo: str, error: Exception) -> HubError:
    """One readable line for an error raised by huggingface_hub or its HTTP client."""
    if isinstance(error, RepositoryNotFoundError):
        return HubError(f"{what}: no repo {repo} on the Hub (or it is private and no token "
                        "with access is set: HF_TOKEN or `hf auth login`)")
    if isinstance(error, GatedRepoError):
        return HubError(f"{what}: {repo} is gated; accept its conditions on the Hub first")
    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(error, HfHubHTTPError) and status in (401, 403):
        return HubError(f"{what}: the Hub refused the token (HTTP {status}); it needs write access "
                        f"to {repo}")
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return HubError(f"{what} failed: {type(error).__name__}: {first[:300]}")


# ---------------------------------------------------------------------------- card pieces


def markdown_table(df: pd.DataFrame) -> str:
    """A Table 1 frame as a markdown table, with the cells every Table 1 shows (core.stats)."""
    heads = list(TABLE1_CELLS)
    align = [":--" if h in ("variant", "val loss", "health") else "--:" for h in heads]
    body = [[cell.replace("|", "\\|") for cell in row.values()] for row in table1_cells(df)]
    return "\n".join("| " + " | ".join(row) + " |" for row in [heads, align, *body])



def _set_value(value) -> str:
    """A --set value that core.config parses back to `value` (plain text where JSON would fail)."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except json.JSONDecodeError:
            return value
    return json.dumps(value)


def _overrides(base: RunConfig, config: RunConfig) -> tuple[str, ...]:
    """`section.field=value` for every field where `config` differs from `base`."""
    out = []
    for section in ("model", "train", "data"):
        ours, theirs = getattr(config, section), getattr(base, section)
        for name, value in vars(ours).items():
            if getattr(theirs, name) != value:
                out.append(f"{section}.{name}={_set_value(value)}")
    return tuple(out)


def _sweep_command(experiment: str, key: tuple, variants: list[str], seeds: list[int]) -> str:
    preset_name, steps, data, overrides = key
    plain = [v for v in variants if "+" not in v]
    labelled = [v for v in variants if "+" in v]
    args = ["python", "-m", "core.sweep", "--experiment", experiment, "--preset", preset_name]
    args += ["--ffn", *plain] if plain else []
    args += ["--variant", *labelled] if labelled else []
    args += ["--seeds", *map(str, seeds), "--steps", str(steps)]
    args += ["--data", data] if data is not None else []
    args += [a for item in overrides for a in ("--set", item)]
    return shlex.join(args)


def sweep_commands(experiment: str, configs: list[dict]) -> list[str]:
    """`python -m core.sweep` commands that recreate exactly these run configs (checked).

    Runs are grouped by preset, steps, data and other overrides; variants that share a seed list
    go in one command. Empty when a config cannot be expressed as a sweep (unknown preset).
    """
    groups: dict[tuple, dict[str, list[int]]] = {}
    wanted: dict[tuple[str, int], RunConfig] = {}
    for raw in configs:
        try:
            config = RunConfig.from_dict(raw)
            label, seed = variant_label(config.model), config.train.seed
            plain = grid(config.preset, [label], [seed], [], config.train.steps)[0].config
        except (ValueError, TypeError):  # an unknown preset or field (another version's config)
            return []
        data = None if config.data.source == plain.data.source else config.data.source
        base = grid(config.preset, [label], [seed], [], config.train.steps, data)[0].config
        key = (config.preset, config.train.steps, data, _overrides(base, config))
        groups.setdefault(key, {}).setdefault(label, []).append(seed)
        wanted[(label, seed)] = config
    commands = []
    for key, by_variant in groups.items():
        by_seeds: dict[tuple[int, ...], list[str]] = {}
        for label, seeds in by_variant.items():
            by_seeds.setdefault(tuple(sorted(set(seeds))), []).append(label)
        for seeds, labels in by_seeds.items():
            cells = grid(key[0], labels, list(seeds), list(key[3]), key[1], key[2])
            if any(wanted.get((c.label, c.seed)) != c.config for c in cells):
                return []  # would not reproduce the configs: better no command than a wrong one
            commands.append(_sweep_command(experiment, key, labels, list(seeds)))
    return commands

