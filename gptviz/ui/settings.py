"""Every setting of the app, declared once: its key, type, default, bounds or choices, whether it
lives in the URL. The sidebar and the pages draw widgets under these keys; this module restores
them from a link or a view file, keeps them when their page is left, and writes them back."""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Iterable

import streamlit as st

from gptviz.ui.navigation import PAGES

log = logging.getLogger(__name__)

DEFAULT_PROMPT = "When Mary and John went to the store, John gave a drink to"
URL_TEXT_LIMIT = 2000  # longer texts (prompt, corrupted prompt) stay out of the address bar
VIEW_FILE_VERSION = 1


@dataclass(frozen=True)
class Setting:
    """One setting. kind: str, int, float, bool or list (of str); default None: the page decides
    (e.g. from the prompt's length). bounds: (low, high) for numbers; choices: the values allowed.
    url: written to and read from the address bar (long: left out when over URL_TEXT_LIMIT).
    keep: kept when its page is left. example: a valid value other than the default (tests, docs)."""

    key: str
    kind: type
    default: object
    example: object
    bounds: tuple | None = None
    choices: tuple | None = None
    url: bool = True
    long: bool = False
    keep: bool = True
    where: str = "sidebar"

    def parse(self, text: str) -> object:
        """A URL's text -> the value, fitted into bounds; ValueError saying why when it is not one this
        setting takes."""
        return self.fit(self.read(text))

    def read(self, text: str) -> object:
        """A URL's text -> the value as written (not fitted); ValueError saying why when it is not one."""
        if self.kind is bool:
            if text.strip().lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"{text!r} is not true or false")
            return text.strip().lower() in ("true", "1")
        if self.kind is list:
            return [part.strip() for part in text.split(",") if part.strip()]
        try:
            value = self.kind(text)
        except ValueError:
            raise ValueError(f"{text!r} is not {'a whole number' if self.kind is int else 'a number'}") from None
        if self.kind is float and not math.isfinite(value):
            raise ValueError(f"{text!r} is not a finite number")
        return self.valid(value)

    def check(self, value: object) -> object:
        """value if this setting takes it (numbers clamped into bounds); ValueError otherwise."""
        return self.fit(self.valid(value))

    def valid(self, value: object) -> object:
        """value if this setting takes it, as it is (not fitted into bounds); ValueError otherwise."""
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.kind is list:
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{value!r} is not a list of names")
            return list(value)
        if not isinstance(value, self.kind) or (self.kind is int and isinstance(value, bool)):
            raise ValueError(f"{value!r} is not a {self.kind.__name__}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{value!r} is not one of {', '.join(map(str, self.choices))}")
        return value

    def fit(self, value: object) -> object:
        """A valid value clamped into the bounds."""
        return value if self.bounds is None else min(max(value, self.bounds[0]), self.bounds[1])

    def dump(self, value: object) -> str:
        if self.kind is bool:
            return "true" if value else "false"
        if self.kind is list:
            return ",".join(value)
        return str(value)


def _settings(where: str, *entries: tuple) -> list[Setting]:
    return [Setting(*entry[:4], **{"where": where, **(entry[4] if len(entry) > 4 else {})}) for entry in entries]


SEED_MAX = 2**31 - 1
SETTINGS: tuple[Setting, ...] = tuple(
    _settings(
        "sidebar",
        ("model", str, None, "local: tiny-llama"),
        ("prompt", str, DEFAULT_PROMPT, "The capital of France is", {"long": True}),
        ("allow_special", bool, False, True),
        ("layer", int, 0, 1, {"bounds": (0, 10**6)}),
        ("head", int, 0, 1, {"bounds": (0, 10**6)}),
        ("max_tokens", int, None, 64, {"bounds": (2, 10**7)}),
        ("gen", str, "", "11,12"),
        ("position", int, None, 2, {"bounds": (0, 10**7)}),  # present only when the user picked one
        ("knockout", str, "", "L0H1"),
        ("ablation", str, "zero", "mean", {"choices": ("zero", "mean")}),
        ("knockout_view", bool, False, True),
    )
    + _settings(
        "overview",
        ("overview_top_k", int, 10, 20, {"bounds": (1, 50)}),
    )
    + _settings(
        "tokens",
        ("tokens_show_ids", bool, False, True),
    )
    + _settings(
        "embeddings",
        ("emb_start", int, 0, 3, {"bounds": (0, 10**7)}),
        ("emb_matrix", str, None, "position embedding"),
        ("emb_vectors", str, None, "residual after layer 1"),
    )
    + _settings(
        "attention",
        ("attn_boost", bool, False, True),
        ("attn_window", bool, False, True),
        ("attn_win_start", int, None, 1, {"bounds": (0, 10**7)}),
        ("attn_win_end", int, None, 3, {"bounds": (1, 10**7)}),
        ("attn_stage_size", int, None, 8, {"bounds": (1, 10**7)}),
        ("attn_stage_start", int, 0, 1, {"bounds": (0, 10**7)}),
        ("attn_lines_start", int, 0, 1, {"bounds": (0, 10**7)}),
    )
    + _settings(
        "inside_block",
        ("norm", str, "norm1", "norm2"),
        ("neuron", int, 0, 5, {"bounds": (0, 10**7)}),
        ("n_positions", int, None, 16, {"bounds": (1, 10**7)}),
        ("dropout_p", float, None, 0.25, {"bounds": (0.0, 0.9)}),
        ("dropout_seed", int, 0, 3, {"bounds": (0, SEED_MAX)}),
    )
    + _settings(
        "next_token",
        ("n_top", int, 15, 7, {"bounds": (1, 100)}),
        ("dist_log", bool, False, True),
        ("temperature", float, 1.0, 0.5, {"bounds": (0.0, 5.0)}),
        ("top_k", int, 0, 5, {"bounds": (0, 10**7)}),
        ("top_p", float, 1.0, 0.9, {"bounds": (0.0, 1.0)}),
        ("seed", int, 0, 42, {"bounds": (0, SEED_MAX)}),
        ("n_generate", int, 1, 5, {"bounds": (1, 64)}),
    )
    + _settings(
        "compare_heads",
        ("cmp_heads", str, None, "L0H1, L2H2"),
        ("cmp_boost", bool, False, True),
        ("cmp_period", int, 30, 12, {"bounds": (1, 100)}),
        ("cmp_seed", int, 0, 3, {"bounds": (0, SEED_MAX)}),
    )
    + _settings(
        "logit_lens",
        ("lens_target", str, "", "Paris"),
        ("lens_target_pick", str, None, "Paris"),
        ("lens_width", int, 64, 32, {"choices": (32, 64, 128, 256)}),
        ("lens_start", int, None, 0, {"bounds": (0, 10**7)}),
    )
    + _settings(
        "why",
        ("why_target", str, "", "Mary"),
        ("why_target_pick", str, None, " Mary"),
        ("why_contrast", str, "", "John"),
        ("why_contrast_pick", str, None, " John"),
        ("why_gradient", bool, False, True),
        ("why_compute", bool, False, True),
        ("corrupt", str, "", "When John and Mary went to the store, Mary gave a drink to", {"long": True}),
    )
    + _settings(
        "circuit",
        ("circuit_source", str, "corrupted", "mean", {"choices": ("corrupted", "mean", "zero")}),
        ("circuit_method", str, "ig", "eap", {"choices": ("eap", "ig")}),
        ("circuit_steps", int, 5, 10, {"bounds": (1, 64)}),
        ("circuit_converge", bool, False, True),
        ("circuit_n", int, 100, 200, {"bounds": (1, 10**7)}),
        ("circuit_split", bool, False, True),
    )
    + _settings(
        "train",
        ("train_preset", str, "shakespeare-char", "induction",
         {"choices": ("shakespeare-char", "induction", "book-gpt2-bpe")}),
        ("train_corpus", str, "shakespeare", "text", {"choices": ("shakespeare", "text")}),
        ("train_text", str, "", "To be, or not to be: that is the question.", {"url": False}),
        ("train_tokenizer", str, "char", "gpt2", {"choices": ("char", "gpt2")}),
        ("train_n_layer", int, 4, 2, {"bounds": (1, 48)}),
        ("train_n_head", int, 4, 2, {"bounds": (1, 64)}),
        ("train_d_model", int, 128, 64, {"bounds": (8, 4096)}),
        ("train_n_ctx", int, 64, 32, {"bounds": (4, 4096)}),
        ("train_dropout", float, 0.0, 0.1, {"bounds": (0.0, 0.9)}),
        ("train_attn_only", bool, False, True),
        ("train_tied", bool, True, False),
        ("train_batch", int, 12, 8, {"bounds": (1, 512)}),
        ("train_lr", float, 1e-3, 3e-4, {"bounds": (1e-6, 1.0)}),
        ("train_iters", int, 2000, 500, {"bounds": (1, 10**6)}),
        ("train_name", str, "my model", "baby shakespeare", {"url": False}),
        ("train_head", str, "L1H0", "L0H1"),
    )
    + _settings(
        "attention_at_scale",
        ("scale_budget", int, 60, 30, {"bounds": (1, 600)}),
    )
)
SETTINGS += tuple(Setting(page.tab_setting, str, page.tabs[0][0], page.tabs[-1][0], where=page.key,
                          choices=tuple(label for label, _ in page.tabs)) for page in PAGES if page.tabs)
BY_KEY = {s.key: s for s in SETTINGS}


STREAMLIT_PARAMS = ("embed", "embed_options")  # Streamlit's own URL parameters
LINK_KEY = "_from_link"  # the settings a link gave, as written: key -> text, until a page fits them to the model


def restore() -> None:
    """Once per session: fill session state from the URL; what the link gave that was left out or
    changed is said on the page (view_state.banners, and link_note where a page fits a setting to the
    model). Every run: fill in the defaults, and keep() the kept settings."""
    state = st.session_state
    if "_restored" not in state:
        state["_restored"] = True
        link = {key: st.query_params[key] for key in st.query_params if key not in STREAMLIT_PARAMS}
        taken = take(link, from_text=True)
        state["_link_taken"] = taken
        state[LINK_KEY] = {key: text for key, text in link.items() if key not in taken.refused}
    for setting in SETTINGS:  # widgets are drawn without value=: the default comes from here
        if setting.default is not None:
            state.setdefault(setting.key, setting.default)
    keep()


def keep() -> None:
    """Re-set every kept setting as a value the script set, before any widget of this run is drawn.
    Streamlit forgets the value of a widget a run does not draw, and a page switch forgets every
    widget of the page left; a value the script set in the run before survives. So every run sets
    them again: a whole run in restore(), a fragment's own rerun (which draws only the fragment and
    starts by turning last run's values into widget values) in ui.fragment. Without the latter a
    page switch right after a fragment rerun loses the prompt and nearly every setting
    (streamlit/streamlit#10805)."""
    state = st.session_state
    for setting in SETTINGS:
        if setting.keep and setting.key in state:
            state[setting.key] = state[setting.key]


@dataclass(frozen=True)
class Taken:
    """What take() did not use as given: refused {key: why}, and changed to fit {key: (as given, used)}."""

    refused: dict[str, str]
    changed: dict[str, tuple[object, object]]

    def note(self, source: str) -> str:
        """What was left out or changed, as a sentence about `source` ("this link"); "" for nothing."""
        parts = [f"`{key}={given}` is out of range ({BY_KEY[key].bounds[0]}–"
                 f"{BY_KEY[key].bounds[1]}): {BY_KEY[key].dump(used)} is used"
                 for key, (given, used) in self.changed.items()]
        parts += [f"`{key}` is left out: {why}" for key, why in self.refused.items()]
        return f"Not all of {source} was used as written: {'; '.join(parts)}." if parts else ""


def take(values: dict, from_text: bool = False) -> Taken:
    """Set the given settings: text from a link (from_text), or values from a view file; numbers out of
    bounds are clamped. What was refused (unknown, invalid, or not kept in links) or clamped."""
    state, refused, changed = st.session_state, {}, {}
    for key, raw in values.items():
        setting = BY_KEY.get(key)
        try:
            if setting is None:
                raise ValueError("not a gptviz setting")
            if from_text and not setting.url:
                raise ValueError("a link does not set it (use a view file)")
            given = setting.read(raw) if from_text else setting.valid(raw)
        except (TypeError, ValueError) as err:
            log.info("Ignoring %s=%r: %s", key, raw, err)
            refused[key] = str(err)
            continue
        state[key] = setting.fit(given)
        if state[key] != given:
            changed[key] = (raw, state[key])
    return Taken(refused, changed)


def apply(values: dict, from_text: bool = False) -> list[str]:
    """take() the values; the keys that were left out, because unknown or invalid."""
    return list(take(values, from_text).refused)


def link_note(key: str, used: object, why: str) -> str:
    """When a page fits a setting the link gave to the model or prompt (the first time it looks at it): a
    sentence saying what it changed, e.g. "The link's `layer=99` is out of range for this model (layers
    0–29): 29 is used."; "" when the link did not give it or it was used as given."""
    given = st.session_state.get(LINK_KEY, {}).pop(key, None)
    setting = BY_KEY.get(key)
    if given is None or setting is None:
        return ""
    try:
        if setting.parse(given) == used:
            return ""
    except ValueError:
        pass
    return f"The link's `{key}={given}` is {why}: {setting.dump(used)} is used."


def current(keys: Iterable[str] | None = None) -> dict:
    """The settings in session state that differ from their default: what a link or a view file keeps."""
    state = st.session_state
    out = {}
    for setting in SETTINGS if keys is None else (BY_KEY[k] for k in keys):
        if setting.key in state and state[setting.key] is not None and state[setting.key] != setting.default:
            out[setting.key] = state[setting.key]
    return out


def too_long_for_link() -> list[str]:
    """The long texts (prompt, corrupted prompt) left out of the link."""
    return [key for key, value in current().items() if BY_KEY[key].long and len(value) > URL_TEXT_LIMIT]


def save_url() -> None:
    """Write the settings to the address bar, so a copied link reproduces the view."""
    left_out = set(too_long_for_link())
    params = {key: BY_KEY[key].dump(value) for key, value in current().items()
              if BY_KEY[key].url and key not in left_out}
    if params != dict(st.query_params):
        st.query_params.from_dict(params)


def view_file(values: dict, ids: Iterable[int]) -> bytes:
    """A view as a JSON file: settings (as current() gives them, long texts included) and the token
    ids they give."""
    return json.dumps({"gptviz_view": VIEW_FILE_VERSION, "settings": values, "ids": list(ids)},
                      ensure_ascii=False, indent=1).encode()


def read_view_file(data: bytes) -> tuple[dict, list[int]]:
    """(settings, ids) of a view file; ValueError saying what is wrong for one that is not a gptviz view."""
    try:
        content = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"This is not a gptviz view file (not JSON: {err}).") from None
    if not isinstance(content, dict) or content.get("gptviz_view") != VIEW_FILE_VERSION:
        raise ValueError('This is not a gptviz view file: it has no "gptviz_view": 1 entry.')
    values, ids = content.get("settings", {}), content.get("ids", [])
    if not isinstance(values, dict) or not isinstance(ids, list):
        raise ValueError('This view file is damaged: "settings" must be an object and "ids" a list.')
    return values, [i for i in ids if isinstance(i, int)]


def open_view(values: dict) -> Taken:
    """Make a view file's settings the session's (what it does not name goes back to its default);
    what was left out as invalid or clamped."""
    for setting in SETTINGS:
        if setting.key not in values and setting.key != "model":
            st.session_state.pop(setting.key, None)
    return take(values)
