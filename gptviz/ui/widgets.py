"""What every page draws the same way: figures, notes, tables, tokens as text, clamped inputs, the
position rule, exact head lists, lazy sections."""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import pandas as pd
import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from gptviz.analysis.attribution import token_choices
from gptviz.config import GPTConfig
from gptviz.labels import Component, component_label, parse_names
from gptviz.plots.common import show_whitespace
from gptviz.ui.navigation import BY_KEY as PAGES_BY_KEY
from gptviz.ui.navigation import tab_labels
from gptviz.ui.settings import keep, link_note, save_url

CHART_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


def chart(fig, key: str, filename: str | None = None, **kwargs):
    """Draw a plotly figure; its modebar's camera button saves it as PNG (offline), named after
    what it shows (`filename`, default the chart's key)."""
    config = {**CHART_CONFIG, "toImageButtonOptions": {**CHART_CONFIG["toImageButtonOptions"],
                                                       "filename": filename or key}}
    return st.plotly_chart(fig, key=key, config=config, width="stretch", **kwargs)


def explain(text: str) -> None:
    """A short learner's explanation above a view (collapsed, so experts skip it)."""
    with st.expander("What am I looking at?", expanded=False):
        st.markdown(text)


def download_csv(frame, name: str, key: str) -> None:
    """A CSV download button for a table or matrix (pandas DataFrame)."""
    st.download_button(f"Download {name} as CSV", frame.to_csv(index=True).encode(), file_name=f"{name}.csv",
                       mime="text/csv", key=key, on_click="ignore")


def matrix_frame(z, rows: list[str], cols: list[str] | None = None, index_name: str | None = None) -> pd.DataFrame:
    """A matrix as a table for download_csv: rows and columns labelled (e.g. by token_labels)."""
    return pd.DataFrame(z, index=pd.Index(rows, name=index_name), columns=cols)


def code(token: str) -> str:
    """A token as markdown inline code, its whitespace made visible."""
    return "`" + show_whitespace(token).replace("`", "ˋ") + "`"


def fmt_bytes(n: float) -> str:
    """Bytes in binary units: 9,216 B, 2.2 MB, 2.3 GB."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024:
            return f"{n:,.0f} B" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TB"


def bits(value: float) -> str:
    """An entropy in bits, never "-0.000"."""
    return f"{max(value, 0.0) + 0.0:.3f} bits"


def percent(fraction: float) -> str:
    """0.55 -> "55%"; never "-0%" (a fraction that rounds to zero from below)."""
    return f"{round(fraction, 2) + 0.0:.0%}"


def clamp_state(key: str, low: int, high: int, default: int) -> int:
    """Keep a widget's remembered value inside [low, high] (the prompt or the model may have shrunk)."""
    state = st.session_state
    try:
        value = int(state.get(key, default))
    except (TypeError, ValueError):
        value = default
    state[key] = min(max(value, low), high)
    if note := link_note(key, state[key], f"out of range here ({low}–{high})"):
        st.warning(note)
    return state[key]


def choose_state(key: str, options: Sequence, default) -> None:
    """Keep a widget's remembered choice among its options (else the default)."""
    if st.session_state.get(key) not in options:
        st.session_state[key] = default
    shown = ", ".join(map(str, list(options)[:6])) + (", …" if len(options) > 6 else "")
    if note := link_note(key, st.session_state[key], f"not one of the choices here ({shown})"):
        st.warning(note)


def sections(page: str) -> list[tuple[str, object]]:
    """The page's lazy tabs (as the page registry lists them): the (label, tab container) of the open
    one only, so a page draws just what is on screen; switching tabs reruns the page. The open tab
    is the page's tab setting (in the URL)."""
    key, labels = PAGES_BY_KEY[page].tab_setting, tab_labels(page)
    choose_state(key, labels, labels[0])
    tabs = st.tabs(labels, key=key, on_change="rerun")
    return [(label, tab) for label, tab in zip(labels, tabs) if tab.open]


def fragment(draw: Callable | None = None, *, run_every: float | None = None) -> Callable:
    """st.fragment for a section whose controls change only its own figures: they rerun that section
    alone (and every `run_every` seconds, if given), keeping the settings and updating the link as a
    whole run does. Every fragment of the app is made here (a bare st.fragment would lose the settings
    on the next page switch: settings.keep)."""
    if draw is None:
        return functools.partial(fragment, run_every=run_every)

    @st.fragment(run_every=run_every)
    @functools.wraps(draw)
    def section(*args, **kwargs):
        ctx = get_script_run_ctx()
        if ctx is not None and ctx.fragment_ids_this_run:  # its own rerun, not part of the whole run
            keep()
        draw(*args, **kwargs)
        save_url()
    return section


def focus(layer: int, head: int | None = None, position: int | None = None) -> None:
    """Focus a head (and pick a position) on every page: the shared settings."""
    state = st.session_state
    state["layer"] = int(layer)
    if head is not None:
        state["head"] = int(head)
    if position is not None:
        state["position"] = int(position)


# ---- the position being explained --------------------------------------------------------------
def position(T: int) -> int:
    """The token position the pages explain: the one the user picked (clamped to the sequence),
    else the last token, so it follows the end as the prompt changes and tokens are generated."""
    picked = st.session_state.get("position")
    return T - 1 if picked is None else min(max(int(picked), 0), T - 1)


def _pick_position(T: int) -> None:
    picked = int(st.session_state["_position_pick"])
    if picked == T - 1:
        st.session_state.pop("position", None)  # at the end: follow it again
    else:
        st.session_state["position"] = picked


def follow_last() -> None:
    st.session_state.pop("position", None)


def position_input(label: str, tokens: Sequence[str], help: str, slider: bool = False,
                   what: str = "Explaining the prediction after") -> int:
    """The shared position's widget, and under it the token it names ("Explaining the prediction
    after token 13 `␣drink`, the last token"); returns the position."""
    T = len(tokens)
    pos = position(T)
    if note := link_note("position", pos, f"past the end of the text (tokens 0–{T - 1})"):
        st.warning(note)
    st.session_state["_position_pick"] = pos
    if T > 1:
        if slider:
            st.slider(label, 0, T - 1, key="_position_pick", on_change=_pick_position, args=(T,), help=help)
        else:
            st.number_input(label, 0, T - 1, step=1, key="_position_pick", on_change=_pick_position, args=(T,),
                            help=help)
    named = f"{what} token {pos} {code(tokens[pos])}"
    if pos == T - 1:
        st.caption(f"{named}, the last token (the position follows the end of the text).")
    else:
        st.caption(f"{named}: picked by you; the last is token {T - 1} {code(tokens[T - 1])}.")
        st.button("Follow the last token", key="_position_follow", on_click=follow_last)
    return pos


# ---- a token typed as a word -------------------------------------------------------------------------
def _clear_pick(key: str) -> None:
    st.session_state.pop(f"{key}_pick", None)


def token_input(tr, position: int, label: str, key: str, placeholder: str, help: str) -> int | None:
    """A typed word -> one token id: its leading-space variant and the bare one are offered with
    their ranks after `position`, the likelier picked unless the user chose (setting `key`_pick).
    None when nothing usable is typed."""
    state = st.session_state
    text = st.text_input(label, key=key, placeholder=placeholder, help=help, on_change=_clear_pick, args=(key,))
    if not text:
        return None
    choices = token_choices(tr, text, position)
    if choices.empty:
        st.warning(f"{text!r} has no token for this tokenizer: type a word.")
        return None
    options = choices["token"].tolist()
    choose_state(f"{key}_pick", options, options[0])  # the likelier
    rows = choices.set_index("token")
    if len(options) > 1:
        st.radio("Which token?", options, key=f"{key}_pick", horizontal=True,
                 format_func=lambda t: f"{show_whitespace(t)}  (rank {rows.loc[t, 'rank']:,}, "
                                       f"p = {rows.loc[t, 'probability']:.3g})")
    row = rows.loc[state[f"{key}_pick"]]
    if row["pieces"] > 1:
        st.caption(f"{show_whitespace(row['typed'])!r} is {row['pieces']} tokens for this tokenizer: the first, "
                   f"{code(state[f'{key}_pick'])}, stands for it.")
    return int(row["id"])


# ---- heads and MLPs typed by name ------------------------------------------------------------------
def components_input(label: str, key: str, config: GPTConfig, mlps: bool, limit: int | None = None,
                     help: str = "") -> list[Component]:
    """A text box of component names parsed exactly (e.g. "L1H5, L23H3, L5 MLP"), rewritten in
    canonical form; what is not a component of this model is named in a warning, never guessed."""
    L, nh = config.n_layer, config.n_head
    found, bad = parse_names(str(st.session_state.get(key, "")), L, nh, mlps)
    example = "L1H5, L3H0" + (", L2 MLP" if mlps else "")
    st.text_input(label, key=key, placeholder=example, on_change=_canonical, args=(key, L, nh, mlps),
                  help=help or f"Names separated by commas, e.g. {example}: layers 0–{L - 1}, heads 0–{nh - 1}.")
    if bad:
        st.warning(f"Not {'a component' if mlps else 'a head'} of this model, left out: "
                   + ", ".join(f"`{b}`" for b in bad) + f" (layers 0–{L - 1}, heads 0–{nh - 1}"
                   + (", or L3 MLP" if mlps else "") + ").")
    if limit is not None and len(found) > limit:
        st.caption(f"The first {limit} are used.")
        found = found[:limit]
    return found


def _canonical(key: str, n_layer: int, n_head: int, mlps: bool) -> None:
    found, bad = parse_names(str(st.session_state.get(key, "")), n_layer, n_head, mlps)
    st.session_state[key] = ", ".join([component_label(c) for c in found] + bad)


def set_components(key: str, components: Sequence[Component]) -> None:
    st.session_state[key] = ", ".join(map(component_label, components))


def toggle_component(key: str, component: Component, config: GPTConfig, mlps: bool = True) -> None:
    """Add a component to the list in `key`, or take it out if it is there (a click on a map cell)."""
    found, _ = parse_names(str(st.session_state.get(key, "")), config.n_layer, config.n_head, mlps)
    set_components(key, [c for c in found if c != component] if component in found else [*found, component])


# ---- notes -----------------------------------------------------------------------------------------
def window_note(config: GPTConfig, layer: int | None = None) -> str:
    """What a sliding window is, for a model that has local layers ("" for one that has none); with
    `layer`, whether that layer is local and what it sees."""
    if not config.has_sliding_layers:
        return ""
    w, n_local = config.sliding_window, config.layer_types.count("sliding")
    which = (f"All {n_local} of this model's layers are" if n_local == config.n_layer else
             f"{n_local} of this model's {config.n_layer} layers are")
    others = "" if n_local == config.n_layer else " The other layers are *global*: they see every earlier token."
    note = (f"\n\n**Sliding window.** {which} *local*: a query there sees only itself and the {w - 1:,} tokens "
            f"before it (a window of {w:,} keys, i − {w:,} < j ≤ i); keys further back are masked like future ones "
            f"(drawn in orange).{others} Local layers make long prompts cheaper: their attention grows like "
            f"T·{w:,}, not T².")
    if layer is not None:
        kind = (f"local: beyond {w:,} tokens its queries no longer see the start of the prompt"
                if config.window(layer) else "global: its queries see every earlier token")
        note += f" Layer {layer} is {kind}."
    return note
